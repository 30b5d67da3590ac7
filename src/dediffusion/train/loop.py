"""Train a De-Diffusion encoder against a frozen decoder with Hugging Face Accelerate.

`train(config, run_dir, resume=None)` runs `config.sleep.steps` sleep steps (the encoder reads the
frozen decoder's drawings of prior texts, drawn once into `run_dir/sleep/`; see models/sleep.py),
then `config.train.steps` wake steps of the model's own loss on the training images, and returns the
folder of the final encoder (`run_dir/final`). Under `accelerate launch` with N
processes the global batch `train.batch_size` is split evenly across them (DDP averages gradients,
so N processes follow one process up to floating-point summation order). The run folder holds
`config.yaml`, `metrics.jsonl`, `checkpoints/step-*/` (the last `keep_checkpoints`), `samples/`,
`bad_files.jsonl` when some images could not be read, `sleep/` (the drawn pairs and `encoder/`, the
encoder as the sleep phase left it) and `final/` (with `training.json`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..config import Config, ConfigError, load_config, save_config
from ..data.grid import save_grid
from ..data.images import ImageSource, from_pixels, load_batch
from ..data.sources import open_source
from ..models.decoder import TextToImageDecoder
from ..models.dediffusion import DeDiffusion, fit_to_decoder
from ..records import machine_summary, utc_now
from .batches import items_for, seeds_for, step_positions
from .checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from .drawn import load_drawn_pairs
from .optim import apply_learning_rate, build_lr_scheduler, build_optimizer

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad update."""


@dataclass
class RunState:
    step: int = 0
    bad_files: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)
    images_seen: int = 0  # since `counting_since`: the start of the current phase's stepping
    counting_since: float = field(default_factory=time.perf_counter)

    def restart_count(self) -> None:
        self.images_seen, self.counting_since = 0, time.perf_counter()


def train(config: Config, run_dir: str | Path, resume: str | None = None, cpu: bool = False, command: str = "") -> Path:
    """Train (or resume) the run in `run_dir`; return the final encoder folder.

    The final folder gets a `training.json` beside the weights: `command` (the command line that
    made it), steps, this process's wall time, the step it resumed from, threads, machine and date.
    """
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    # without CUDA, several processes (torchrun / accelerate launch) run as MULTI_CPU with gloo
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision, cpu=cpu or not torch.cuda.is_available())
    checkpoint = resolve_resume(run_dir, resume)
    decoder = load_decoder(config)
    config = fit_to_decoder(config, decoder.max_tokens)
    if accelerator.is_main_process:
        prepare_run_dir(run_dir, config, resuming=checkpoint is not None)
    model, optimizer, lr_scheduler = build_training(config, decoder, accelerator)
    dataset = build_dataset(config, model.decoder.resolution)
    state = RunState()
    if checkpoint is not None:
        state.step = load_checkpoint(checkpoint, model, optimizer, lr_scheduler)
        apply_learning_rate(optimizer, lr_scheduler, config.train.learning_rate)  # it may change on resume
        logger.info("resumed from %s at step %d", checkpoint, state.step)
        if accelerator.is_main_process:
            trim_metrics(run_dir / "metrics.jsonl", state.step)
    drawn = load_drawn_pairs(model, config, run_dir, accelerator) if state.step < config.sleep.steps else None
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    resumed_from = state.step
    run_steps(ddp_model, model, optimizer, lr_scheduler, (dataset, drawn), config, run_dir, accelerator, state)
    final = run_dir / "final"
    if accelerator.is_main_process:
        model.save_pretrained(final)
        record = training_record(command, config, time.perf_counter() - state.started, resumed_from, accelerator)
        atomic_write_bytes(final / "training.json", (json.dumps(record, indent=2) + "\n").encode())
        logger.info("final encoder written to %s", final)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


# settings a resumed run may change: how fast and how long it learns, and what it logs and keeps
RESUMABLE_KEYS = frozenset(
    {
        "train.learning_rate", "train.max_grad_norm", "train.steps", "train.log_every", "train.checkpoint_every",
        "train.keep_checkpoints", "train.sample_every", "train.num_samples", "sleep.learning_rate",
    }
)  # fmt: skip


def prepare_run_dir(run_dir: Path, config: Config, resuming: bool) -> None:
    """Write config.yaml and remove what a run killed mid-write left; a resumed run must use the config it
    was started with, except for `RESUMABLE_KEYS`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)
    saved = run_dir / "config.yaml"
    if resuming and saved.is_file():
        before = load_config(str(saved)).to_dict()
        after = config.to_dict()
        changed = [f"{s}.{k}" for s in after for k in after[s] if before[s][k] != after[s][k]]
        fixed = [key for key in changed if key not in RESUMABLE_KEYS]
        if fixed:
            raise ConfigError(
                f"cannot resume '{run_dir}' with a different config (changed: {fixed}); a resumed run may "
                f"change only {sorted(RESUMABLE_KEYS)}. Use the saved config.yaml or a new run folder"
            )
        if changed:
            logger.info("resuming with changed settings: %s", ", ".join(changed))
    elif not resuming and list_checkpoints(run_dir):
        raise ConfigError(f"'{run_dir}' already holds checkpoints: pass --resume latest, or pick a new folder")
    save_config(config, saved)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the `.NAME.tmp-*` / `.NAME.old-*` folders and files an atomic write leaves when killed."""
    import shutil

    for folder in (run_dir, run_dir / "checkpoints", run_dir / "sleep"):
        stale = [*folder.glob(".*.tmp-*"), *folder.glob(".*.old-*")] if folder.is_dir() else []
        for path in stale:
            logger.info("removing %s, left by a run that was stopped while writing it", path)
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def build_dataset(config: Config, resolution: int) -> ImageSource:
    """Training images, resized and center-cropped to the decoder's resolution: an image folder, webdataset
    shards, parquet files or a `datasets` folder (data/sources.py), each read by index, so batches are
    pure functions of (seed, step) whatever the kind."""
    if not config.train.data:
        raise ConfigError(
            "no training images: set train.data (--data) to a folder of images, webdataset shards, parquet "
            "files or a datasets folder"
        )
    return open_source(config.train.data, resolution)


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from (they will be logged again)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())


def load_decoder(config: Config) -> TextToImageDecoder:
    if not config.decoder.path:
        raise ConfigError("no decoder: pass --decoder PATH (a diffusers folder, hub id or bundled:decoder_a)")
    return TextToImageDecoder.from_pretrained(config.decoder.path, dtype=config.decoder.dtype)


def build_training(config: Config, decoder: TextToImageDecoder, accelerator):
    if config.train.gradient_checkpointing:
        decoder.unet.enable_gradient_checkpointing()
    torch.manual_seed(config.train.seed)  # encoder initialisation
    model = DeDiffusion(config, decoder).to(accelerator.device)
    optimizer = build_optimizer(model.encoder.parameters(), config.train)
    return model, optimizer, build_lr_scheduler(optimizer, config.train, config.sleep)


def total_steps(config: Config) -> int:
    return config.sleep.steps + config.train.steps


def run_steps(ddp_model, model, optimizer, lr_scheduler, data, config, run_dir, accelerator, state) -> None:
    """Sleep steps on the drawn pairs, then wake steps on the images; `data` is (images, drawn pairs)."""
    cfg = config.train
    dataset, drawn = data
    progress = progress_bar(total_steps(config), state.step, accelerator)
    model.train()
    state.restart_count()  # images/s counts stepping only, not the drawing before it
    while state.step < total_steps(config):
        if state.step == config.sleep.steps:
            state.restart_count()  # sleep and wake steps differ in cost: each phase gets its own rate
        if state.step < config.sleep.steps:
            out = sleep_step(ddp_model, drawn, config, state, accelerator)
        else:
            out = wake_step(ddp_model, dataset, config, run_dir, state, accelerator)
        check_finite(out["loss"], config, state.step, run_dir, accelerator)
        accelerator.backward(out["loss"])
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.encoder.parameters(), cfg.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        after_step(model, optimizer, lr_scheduler, dataset, out, config, run_dir, accelerator, state, progress)
    progress.close()


def sleep_step(ddp_model, drawn, config: Config, state: RunState, accelerator) -> dict:
    """The loss of one sleep step: a batch of the decoder's drawings and the token ids they were drawn from."""
    pixels, token_ids = drawn
    batch_size = config.sleep.batch_size
    positions = step_positions(state.step, batch_size, accelerator.process_index, accelerator.num_processes)
    items = items_for(positions, len(token_ids), config.train.seed)
    images = from_pixels(pixels[items]).to(accelerator.device)
    state.images_seen += batch_size
    with accelerator.autocast():
        return ddp_model(images, seeds_for(positions, config.train.seed), state.step, token_ids=token_ids[items])


def wake_step(ddp_model, dataset, config: Config, run_dir: Path, state: RunState, accelerator) -> dict:
    """The loss of one wake step on the training images; wake step w sees what step w of a run without sleep sees."""
    cfg, step = config.train, state.step - config.sleep.steps
    positions = step_positions(step, cfg.batch_size, accelerator.process_index, accelerator.num_processes)
    items = items_for(positions, len(dataset), cfg.seed)
    images, loaded, errors = load_batch(dataset, items)
    report_bad_files(errors, state, run_dir, accelerator)
    if not loaded:
        raise RuntimeError(f"no image of step {state.step} could be read; see {run_dir / 'bad_files.jsonl'}")
    state.images_seen += cfg.batch_size
    with accelerator.autocast():
        return ddp_model(images.to(accelerator.device), seeds_for(positions, cfg.seed)[loaded], step)


def after_step(model, optimizer, lr_scheduler, dataset, out, config, run_dir, accelerator, state, progress) -> None:
    cfg, step, total = config.train, state.step, total_steps(config)
    progress.update(1)
    if step % cfg.log_every == 0 or step == total:
        phase = "sleep" if step <= config.sleep.steps else "wake"
        record = metrics_record(out, lr_scheduler, state, accelerator, phase)
        shown = {k: record[k] for k in ("loss", "denoising_loss", "temperature") if k in record}
        progress.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
        if accelerator.is_main_process:
            values = " ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in shown.items())
            logger.info("%s: %s %.1f images/s", step_label(config, step), values, record["images_per_s"])
            with open(run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
    if accelerator.is_main_process and step == config.sleep.steps:
        model.save_pretrained(run_dir / "sleep" / "encoder")  # the encoder as the sleep phase left it
    if accelerator.is_main_process and (step % cfg.checkpoint_every == 0 or step == total):
        save_checkpoint(run_dir, step, model, optimizer, lr_scheduler, cfg.keep_checkpoints)
    if accelerator.is_main_process and cfg.sample_every and step % cfg.sample_every == 0:
        write_samples(model, dataset, cfg.num_samples, run_dir / "samples" / f"step-{step:08d}.png")
    accelerator.wait_for_everyone()


def training_record(command: str, config: Config, seconds: float, resumed_from: int, accelerator) -> dict:
    """What made a final encoder folder, and how long it took (this process: since `resumed_from`)."""
    return {
        "command": command,
        "steps": config.train.steps,
        "sleep_steps": config.sleep.steps,
        "wall_time_s": round(seconds, 1),
        "resumed_from_step": resumed_from,
        "processes": accelerator.num_processes,
        "torch_threads": torch.get_num_threads(),
        "machine": machine_summary(),
        "date": utc_now(),
    }


def metrics_record(out, lr_scheduler, state, accelerator, phase: str) -> dict:
    """A metrics line; the sleep phase has no denoising loss or temperature, so its lines lack them."""

    def mean(key: str) -> float:
        return accelerator.reduce(out[key].detach().float(), reduction="mean").item()

    elapsed = time.perf_counter() - state.counting_since
    record = {"step": state.step, "phase": phase, "loss": mean("loss")}
    if "denoising_loss" in out:
        record["denoising_loss"] = mean("denoising_loss")
    if "temperature" in out:
        record["temperature"] = float(out["temperature"])
    return record | {
        "token_confidence": float(out["token_confidence"]),
        "lr": lr_scheduler.get_last_lr()[0],
        "images_per_s": state.images_seen / max(elapsed, 1e-9),
        "time": time.time(),
    }


def step_label(config: Config, step: int) -> str:
    """What step `step` (1-based, counting sleep and wake steps together) is, in words a user reads:
    "sleep step 5/100 (run step 5/300)" or "wake step 3/200 (run step 103/300)"."""
    total = total_steps(config)
    if step <= config.sleep.steps:
        return f"sleep step {step}/{config.sleep.steps} (run step {step}/{total})"
    return f"wake step {step - config.sleep.steps}/{config.train.steps} (run step {step}/{total})"


def check_finite(loss: torch.Tensor, config: Config, step: int, run_dir: Path, accelerator) -> None:
    """Stop before a NaN/inf loss updates the weights (`step`: the steps done before it); the last
    checkpoint stays the last good one, and the message says how to go on from it."""
    finite = accelerator.reduce(torch.isfinite(loss.detach()).float().reshape(1), reduction="sum")
    if finite.item() < accelerator.num_processes:
        found = list_checkpoints(run_dir)
        last = f"the last good checkpoint is {found[-1][1]}" if found else "no checkpoint was written yet"
        key = "sleep.learning_rate" if step < config.sleep.steps else "train.learning_rate"
        lower = (config.sleep.learning_rate if step < config.sleep.steps else config.train.learning_rate) / 10
        raise NonFiniteLossError(
            f"loss is {loss.item()} at {step_label(config, step + 1)}: training stopped before the update; {last}. "
            f"Rerun the same train command with --resume latest --set {key}={lower:.3g} "
            "(or check the images for damaged files)."
        )


def report_bad_files(errors, state: RunState, run_dir: Path, accelerator) -> None:
    for error in errors:
        if str(error.path) in state.bad_files:
            continue
        state.bad_files.add(str(error.path))
        logger.warning("skipping %s", error)
        if accelerator.is_main_process:
            with open(run_dir / "bad_files.jsonl", "a") as handle:
                handle.write(json.dumps({"path": str(error.path), "error": str(error)}) + "\n")


@torch.no_grad()
def write_samples(model: DeDiffusion, dataset: ImageSource, count: int, path: Path) -> None:
    """A grid of the first `count` images | their text | the decoder's reconstruction."""
    images, _, _ = load_batch(dataset, list(range(min(count, len(dataset)))))
    model.eval()
    texts, reconstructions = model.reconstruct(images.to(model.device), num_inference_steps=25)
    model.train()
    save_grid(path, images, texts, [reconstructions], headers=["image", "text", "reconstruction"])


def progress_bar(total: int, initial: int, accelerator):
    from ..progress import progress_bar as bar

    return bar(total, "train", unit="step", initial=initial, enabled=accelerator.is_main_process)
