"""Perception for the world: a small CNN that reads the scene graph back from 32x32 pixels.

It exists only to score reconstructions (``eval.scene_accuracy``); it never trains the De-Diffusion
encoder. From images ``(B, 3, 32, 32)`` in [-1, 1] it predicts the background colour and, for each of
the 9 grid cells, whether an object is there and the object's shape, colour and size. Heads are
shared across cells (a cell's features plus a learned cell embedding), so the scene graph is read
off cell by cell.

Trained on freshly rendered ``train_scenes`` only, never the test split, with mild noise and blur
augmentation so that nuisances of reconstructions are not read as objects. Weights are a folder with
``model.safetensors`` and ``config.json`` (architecture, vocabularies, how it was trained); the
trained default is bundled under ``dediffusion/assets/perception`` and loads with
``PerceptionModel.load()``. Reproduce it (about 4 minutes on one CPU thread) with
``dediffusion world pretrain-perception --out src/dediffusion/assets/perception --threads 1``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dediffusion.progress import progress_range
from dediffusion.world.render import render_batch
from dediffusion.world.scene import BACKGROUNDS, COLORS, GRID, SHAPES, SIZES, Scene, sample_scene
from dediffusion.world.split import scene_rng

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CELLS = GRID * GRID
IGNORE = -100  # target of an attribute in an empty cell: no loss there
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "background": tuple(BACKGROUNDS),
    "occupied": ("empty", "object"),
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
}
CELL_HEADS = ("occupied", "shape", "color", "size")


@dataclass(frozen=True)
class PerceptionConfig:
    """Architecture: a stride-1 stem, then one stride-2 stage per extra entry of ``channels``."""

    channels: tuple[int, ...] = (24, 32, 64)
    hidden: int = 64
    cell_grid: int = 2  # each cell is read from a cell_grid x cell_grid patch of pooled features
    image_size: int = 32

    def __post_init__(self) -> None:
        if not self.channels or min(*self.channels, self.hidden, self.cell_grid) < 1:
            raise ValueError(f"channels, hidden and cell_grid must be positive, got {self}")
        if self.image_size < GRID:
            raise ValueError(f"image_size must be at least {GRID}, got {self.image_size}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PerceptionModel(nn.Module):
    """Image -> logits for the background and, per grid cell, occupied / shape / colour / size."""

    def __init__(self, config: PerceptionConfig | None = None) -> None:
        super().__init__()
        self.config = config or PerceptionConfig()
        self.metadata: dict[str, Any] = {}  # how the weights were made; saved in config.json
        channels = self.config.channels
        layers = [_conv(3, channels[0])]
        for cin, cout in zip(channels, channels[1:]):
            layers += [_conv(cin, cout, stride=2), _conv(cout, cout)]
        self.trunk = nn.Sequential(*layers)
        width = channels[-1] * self.config.cell_grid**2
        self.cell_embedding = nn.Parameter(torch.zeros(CELLS, width))
        self.cell_head = nn.Sequential(
            nn.Linear(width, self.config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(self.config.hidden, sum(len(VOCABULARIES[h]) for h in CELL_HEADS)),
        )
        self.background_head = nn.Linear(channels[-1], len(VOCABULARIES["background"]))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``background`` (B, 4); ``occupied`` (B, 9, 2), ``shape`` (B, 9, 5), ``color``
        (B, 9, 8), ``size`` (B, 9, 2), cells in row-major order (``world.POSITIONS``).

        Raises:
            ValueError: if ``images`` is not ``(B, 3, image_size, image_size)``.
        """
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"expected images (B, 3, {size}, {size}) in [-1, 1], got {tuple(images.shape)}")
        features = self.trunk(images)  # (B, C, h, w)
        cells = _cell_patches(features, self.config.cell_grid)  # (B, 9, C * g * g)
        logits = self.cell_head(cells + self.cell_embedding)  # (B, 9, sum of cell vocabularies)
        sizes = [len(VOCABULARIES[h]) for h in CELL_HEADS]
        out = dict(zip(CELL_HEADS, logits.split(sizes, dim=-1)))
        out["background"] = self.background_head(features.mean(dim=(2, 3)))  # (B, 4)
        return out

    def loss(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy per head (attributes only in occupied cells); ``loss`` is their sum."""
        logits = self(images)
        out = {
            name: F.cross_entropy(logits[name].flatten(0, -2), targets[name].flatten(), ignore_index=IGNORE)
            for name in VOCABULARIES
        }
        out["loss"] = sum(out.values())
        return out

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict[str, Any]]:
        """Read scene graphs from images ``(B, 3, 32, 32)`` in [-1, 1]; the model must be in eval mode.

        Returns:
            one dict per image in the ``Scene.to_dict()`` layout without jitter: ``background`` and
            ``objects`` (each ``shape``, ``color``, ``size``, ``row``, ``col``; row-major). It may hold
            0 or more than 3 objects or a colour the world never puts on that background, so it is a
            plain dict; ``Scene.from_dict`` accepts it when it satisfies the scene invariants.
        """
        if self.training:
            raise RuntimeError("call model.eval() before predict(): BatchNorm must use its running stats")
        labels = {name: logits.argmax(-1).tolist() for name, logits in self(images).items()}
        return [_decode(labels, i) for i in range(images.shape[0])]

    def save(self, path: str | os.PathLike) -> None:
        """Write ``model.safetensors`` and ``config.json`` into folder ``path``, each atomically."""
        from safetensors.torch import save

        folder = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        config = {"config": asdict(self.config), "vocabularies": VOCABULARIES, "metadata": self.metadata}
        _write_atomic(folder / WEIGHTS_FILE, save(state))
        _write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> PerceptionModel:
        """Load weights saved by ``save``; ``None`` loads the bundled default. Returns it in eval mode.

        Raises:
            FileNotFoundError: if the folder lacks ``model.safetensors`` or ``config.json``.
            ValueError: if the weights were trained on different world vocabularies.
        """
        from safetensors.torch import load_file

        folder = Path(path) if path is not None else default_weights_path()
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name} not found; perception weights are a folder with {WEIGHTS_FILE} and "
                    f"{CONFIG_FILE} (train them with `dediffusion world pretrain-perception --out DIR`)"
                )
        saved = json.loads((folder / CONFIG_FILE).read_text())
        _check_vocabularies(saved.get("vocabularies", {}), folder)
        model = cls(PerceptionConfig(**{**saved["config"], "channels": tuple(saved["config"]["channels"])}))
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        model.metadata = saved.get("metadata", {})
        return model.eval()


def default_weights_path() -> Path:
    """Folder of the bundled perception weights inside the installed package."""
    return Path(str(resources.files("dediffusion") / "assets" / "perception"))


def scene_targets(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Class indices per head: ``background`` (B,), cell heads (B, 9) with ``IGNORE`` where empty."""
    targets = {name: torch.full((len(scenes), CELLS), IGNORE, dtype=torch.long) for name in CELL_HEADS}
    targets["occupied"].zero_()
    targets["background"] = torch.tensor([VOCABULARIES["background"].index(s.background) for s in scenes])
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            targets["occupied"][i, obj.cell] = 1
            for name in ("shape", "color", "size"):
                targets[name][i, obj.cell] = VOCABULARIES[name].index(getattr(obj, name))
    return targets


def augment(images: torch.Tensor, noise_std: float, blur_prob: float, generator: torch.Generator) -> torch.Tensor:
    """Blur each image (3x3 box) with probability ``blur_prob``, then add Gaussian noise whose
    standard deviation is drawn per image from U(0, ``noise_std``); clamp to [-1, 1]."""
    batch = images.shape[0]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    chosen = torch.rand(batch, 1, 1, 1, generator=generator) < blur_prob
    images = torch.where(chosen, blurred, images)
    sigma = noise_std * torch.rand(batch, 1, 1, 1, generator=generator)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(-1.0, 1.0)


@dataclass
class _Log:
    """Running sums between log lines."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value.item()
        self.count += 1

    def flush(self, step: int, steps: int, elapsed: float) -> None:
        means = " ".join(f"{k}={v / self.count:.4f}" for k, v in self.sums.items())
        logger.info("step %d/%d %s (%.0fs)", step, steps, means, elapsed)
        self.sums, self.count = {}, 0


def train_perception(
    num_scenes: int = 1_000_000,
    steps: int = 1500,
    batch_size: int = 128,
    seed: int = 0,
    out_path: str | os.PathLike | None = None,
    log_every: int = 100,
    lr: float = 3e-3,
    config: PerceptionConfig | None = None,
    noise_std: float = 0.1,
    blur_prob: float = 0.25,
) -> PerceptionModel:
    """Train a perception model on scenes rendered on the fly from ``train_scenes(seed=seed)``.

    Step ``k`` uses training scenes ``k * batch_size .. (k + 1) * batch_size - 1`` modulo
    ``num_scenes``, so with ``num_scenes >= steps * batch_size`` every image is new. AdamW with a
    linear warm-up (5% of steps) and cosine decay to zero. Images are augmented (``augment``) so that
    pixel noise and mild blur, which reconstructions have and scenes do not, are not read as objects.

    Args:
        num_scenes: size of the pool of training scenes (>= 1).
        steps: optimiser steps (>= 1).
        batch_size: scenes per step (>= 1).
        seed: seeds both the training scene stream and the weight initialisation.
        out_path: folder to save the trained weights into (``save``); ``None`` saves nothing.
        log_every: log mean losses every this many steps.
        lr: peak learning rate.
        config: architecture; default ``PerceptionConfig()``.
        noise_std, blur_prob: augmentation strength (see ``augment``); 0 turns each off.
    Returns:
        the trained model, in eval mode, with ``metadata`` describing the run.
    Raises:
        ValueError: if a count is below 1.
    """
    if min(num_scenes, steps, batch_size, log_every) < 1:
        raise ValueError("num_scenes, steps, batch_size and log_every must all be >= 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PerceptionModel(config)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(steps))
    model.train()
    log, start = _Log(), time.perf_counter()
    for step in progress_range(0, steps, "perception"):
        scenes = [sample_scene(scene_rng(seed, i % num_scenes)) for i in _indices(step, batch_size)]
        images = augment(render_batch(scenes, model.config.image_size), noise_std, blur_prob, generator)
        losses = model.loss(images, scene_targets(scenes))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        schedule.step()
        log.add(losses)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log.flush(step + 1, steps, time.perf_counter() - start)
    model.metadata = {
        "train": dict(
            num_scenes=num_scenes,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            lr=lr,
            noise_std=noise_std,
            blur_prob=blur_prob,
        ),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }
    model.eval()
    if out_path is not None:
        model.save(out_path)
        logger.info("saved perception weights to %s", out_path)
    return model


def _cell_patches(features: torch.Tensor, grid: int) -> torch.Tensor:
    """Pool (B, C, h, w) to (B, C, 3g, 3g) and gather each cell's g x g patch: (B, 9, C * g * g)."""
    pooled = F.adaptive_avg_pool2d(features, GRID * grid)
    batch, channels = pooled.shape[:2]
    patches = pooled.view(batch, channels, GRID, grid, GRID, grid).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, CELLS, channels * grid * grid)


def _indices(step: int, batch_size: int) -> range:
    return range(step * batch_size, (step + 1) * batch_size)


def _warmup_cosine(steps: int):
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def _decode(labels: dict[str, list], i: int) -> dict[str, Any]:
    objects = [
        {name: VOCABULARIES[name][labels[name][i][cell]] for name in ("shape", "color", "size")}
        | {"row": cell // GRID, "col": cell % GRID}
        for cell in range(CELLS)
        if labels["occupied"][i][cell] == 1
    ]
    return {"background": VOCABULARIES["background"][labels["background"][i]], "objects": objects}


def _check_vocabularies(saved: dict[str, list[str]], folder: Path) -> None:
    for name, vocabulary in VOCABULARIES.items():
        if tuple(saved.get(name, ())) != vocabulary:
            raise ValueError(
                f"{folder / CONFIG_FILE}: the {name} vocabulary {saved.get(name)} differs from this "
                f"world's {list(vocabulary)}; retrain with `dediffusion world pretrain-perception`"
            )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
