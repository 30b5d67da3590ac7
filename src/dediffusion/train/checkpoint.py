"""Training checkpoints: written atomically, the last k kept, found again by `--resume latest`.

A checkpoint is a folder `checkpoints/step-00000123/` holding the encoder folder files (so any
checkpoint loads with `DeDiffusion.from_pretrained`) plus `training_state.pt` (optimizer and LR
schedule state, step). It is written into a temporary sibling and renamed into place, so a run
killed mid-write leaves either the previous checkpoints or a complete new one, never a half one.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_folder, atomic_write_bytes  # noqa: F401  (re-exported for callers)

logger = logging.getLogger(__name__)

STATE_NAME = "training_state.pt"
STEP_PATTERN = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return sorted(f for f in found if (f[1] / STATE_NAME).is_file())


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """`None` -> no resume; "latest" -> newest checkpoint of the run (None if there is none yet);
    otherwise a checkpoint folder path, which must exist."""
    if not resume:
        return None
    if resume == "latest":
        found = list_checkpoints(run_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"cannot resume from '{path}': it is not a checkpoint folder (no {STATE_NAME})")
    return path


def save_checkpoint(run_dir: Path, step: int, model, optimizer, lr_scheduler, keep: int) -> Path:
    """Write the checkpoint for `step` atomically, then delete all but the newest `keep`."""
    from ..models.dediffusion import save_encoder_files

    target = checkpoint_dir(run_dir, step)
    with atomic_folder(target) as tmp:
        save_encoder_files(model, tmp)
        state = {"step": step, "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}
        torch.save(state, tmp / STATE_NAME)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", target)
    return target


def load_checkpoint(path: Path, model, optimizer, lr_scheduler) -> int:
    """Restore encoder weights, optimizer and schedule; return the step to continue from."""
    from safetensors.torch import load_file

    from ..models.dediffusion import WEIGHTS_NAME, load_encoder_state

    state = load_file(str(Path(path) / WEIGHTS_NAME))
    if not torch.equal(state.pop("vocab_mask").bool(), model.vocab_mask.cpu()):
        raise ValueError(f"checkpoint '{path}' was trained with another vocabulary mask; start a new run")
    load_encoder_state(model.encoder, state, path)
    training = torch.load(Path(path) / STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(training["optimizer"])
    lr_scheduler.load_state_dict(training["lr_scheduler"])
    return int(training["step"])
