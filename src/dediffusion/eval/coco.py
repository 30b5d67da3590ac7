"""COCO-style FID: photos redrawn from the encoder's text and from their captions, each set against the photos.

The paper's COCO experiment (Wei et al. 2024): COCO photos are redrawn by Stable Diffusion 2-base from
De-Diffusion text and, as the baseline, from their human captions; the lower FID of the redraws against the
photos says which text carries more of the image. `run_coco_fid` does this for any encoder, any
text-to-image target (a diffusers pipeline: `models.pipelines.PipelineTarget`) and any feature network:

- photos: the captioned images of a folder (`data.captions`); with `num_images` fewer than all, a subset
  drawn with `seed` (COCO-30K is 30,000 of val2014's photos), in file-name order;
- the encoder reads each photo at its decoder's resolution (as `dediffusion encode` does); photos that
  cannot be read are skipped with a warning before anything is drawn;
- real side: each photo's shorter side resized to `resolution`, centre cropped (bicubic, antialiased);
- redraws: the target draws image i from its text and from its caption with the same seed, `seed + i`,
  at its own resolution, then resized to `resolution`. Both prompt sources at every guidance scale;
- FID: uint8 crops through the feature network into torchmetrics' `FrechetInceptionDistance`
  (`eval/fid.py`); the photos' statistics are computed once and kept for every row.

FID falls with more images and depends on the crop size and the feature network: compare rows of one
report, or runs with the same `num_images`, `resolution` and network.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.captions import CaptionedImage, CaptionsError, captioned_images, find_captions
from ..data.images import ImageLoadError, load_image, open_rgb, resize_center_crop, to_pil
from ..progress import progress_bar
from .fid import describe, frechet_inception_distance

logger = logging.getLogger(__name__)

TEXT, CAPTION = "De-Diffusion text", "caption"


@dataclass(frozen=True)
class CocoSettings:
    images: str  # a folder of photos
    captions: str | None = None  # COCO annotation file or captions.jsonl; None: found beside the images
    num_images: int | None = None  # None: every captioned photo
    resolution: int = 256  # the side of the square crops FID compares
    guidance_scales: tuple[float, ...] = (3.0,)
    num_inference_steps: int = 50
    batch_size: int = 8
    seed: int = 0
    unique_words: bool = True  # the target reads the text's unique words (as `reconstruct --pipeline`)
    examples: int = 8  # photos shown in the examples grid


def run_coco_fid(model, target, settings: CocoSettings, features: torch.nn.Module, feature_name: str = "") -> dict:
    """FID of `target`'s redraws from `model`'s text and from the captions, against the photos.

    Args:
        model: a `DeDiffusion` encoder (its `encode` writes the text).
        target: what draws: `generate(texts, guidance_scale, num_inference_steps, seeds)` -> (B, 3, H, W) in
            [-1, 1] (a `PipelineTarget`).
        features: the feature network, uint8 (B, 3, R, R) -> (B, D), on the device the images go to.
        feature_name: how the report names it (default: `fid.describe(features)`).
    Returns:
        A JSON-ready record: `settings`, `rows` (source, guidance_scale, fid, num_images, seconds), `texts`
        (path, caption, text per photo) and `examples` (tensors for the grid, removed by `write_coco_report`).
    Raises:
        CaptionsError: no captions, or fewer than 2 of their photos in the folder and readable.
        FIDUnavailableError: torchmetrics is not installed.
    """
    start = time.perf_counter()
    device = next(iter(features.parameters()), torch.empty(0)).device
    metric = frechet_inception_distance(features).to(device)  # before any work: it may be unavailable
    captions = Path(settings.captions) if settings.captions else find_captions(settings.images)
    pairs = choose(captioned_images(settings.images, captions), settings.num_images, settings.seed)
    pairs, texts = encode_photos(model, pairs, settings)
    prompts = {TEXT: texts, CAPTION: [pair.caption for pair in pairs]}
    rows, examples = [], {}
    for scale in settings.guidance_scales:
        for source, lines in prompts.items():
            begun, first = time.perf_counter(), not rows  # the first pass also feeds the photos, once
            drawn, photos = feed_redraws(metric, target, pairs, lines, scale, settings, with_photos=first)
            rows.append({"source": source, "guidance_scale": scale, "fid": float(metric.compute()),
                         "num_images": len(pairs), "seconds": round(time.perf_counter() - begun, 1)})  # fmt: skip
            logger.info("FID %.3f: %s at guidance %g (%d images)", rows[-1]["fid"], source, scale, len(pairs))
            metric.reset()  # the redraws' statistics; the photos' stay
            examples.setdefault(source, drawn)
            if first:
                examples["photos"] = photos
    return {
        "settings": asdict(replace(settings, guidance_scales=list(settings.guidance_scales))),
        "captions_file": str(captions),
        "feature_network": feature_name or describe(features),
        "rows": rows,
        "texts": [{"path": str(p.path), "caption": p.caption, "text": t} for p, t in zip(pairs, texts)],
        "examples": examples,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }


def choose(pairs: list[CaptionedImage], count: int | None, seed: int) -> list[CaptionedImage]:
    """`count` of the pairs drawn with `seed` (all when `count` is None or not fewer), in their order."""
    if count is None or count >= len(pairs):
        if count is not None:
            logger.warning("asked for %d images, %d have captions: using them all", count, len(pairs))
        return pairs
    return [pairs[i] for i in sorted(random.Random(seed).sample(range(len(pairs)), count))]


@torch.no_grad()
def encode_photos(model, pairs: list[CaptionedImage], settings: CocoSettings):
    """The encoder's text for each readable photo: (the pairs that loaded, their texts)."""
    kept, texts = [], []
    with progress_bar(len(pairs), "encode", unit="image") as bar:
        for batch in batches(pairs, settings.batch_size):
            images, loaded = [], []
            for pair in batch:
                try:
                    images.append(load_image(pair.path, model.decoder.resolution))
                    loaded.append(pair)
                except ImageLoadError as error:
                    logger.warning("skipped %s", error)
            if images:
                texts += model.encode(torch.stack(images).to(model.device), unique_words=settings.unique_words)
                kept += loaded
            bar.update(len(batch))
    if len(kept) < 2:
        raise CaptionsError(
            f"FID needs at least 2 readable captioned photos; {len(kept)} of {len(pairs)} in '{settings.images}' "
            "could be read: add photos, or give the folder their captions name"
        )
    return kept, texts


def feed_redraws(metric, target, pairs, prompts, scale: float, settings: CocoSettings, with_photos: bool):
    """Redraw every photo from `prompts` into `metric` (`with_photos`: the photos too). Returns the first
    `settings.examples` redraws, and photos (None without `with_photos`), as uint8 (B, 3, R, R)."""
    shown, seen, done = [], [], 0
    with progress_bar(len(pairs), f"draw (guidance {scale:g})", unit="image") as bar:
        for batch in batches(list(range(len(pairs))), settings.batch_size):
            keep = max(settings.examples - done, 0)
            if with_photos:
                photos = torch.stack([photo_pixels(pairs[i].path, settings.resolution) for i in batch])
                metric.update(photos.to(metric.device), real=True)
                seen.append(photos[:keep])
            seeds = [settings.seed + i for i in batch]
            drawn = target.generate([prompts[i] for i in batch], scale, settings.num_inference_steps, seeds)
            pixels = resized_pixels(drawn, settings.resolution)
            metric.update(pixels.to(metric.device), real=False)
            shown.append(pixels[:keep])
            done += len(batch)
            bar.update(len(batch))
    return torch.cat(shown), torch.cat(seen) if with_photos else None


def photo_pixels(path: Path, resolution: int) -> torch.Tensor:
    """uint8 (3, R, R): the photo's shorter side resized to R, centre cropped."""
    return pil_pixels(resize_center_crop(open_rgb(path), resolution))


def resized_pixels(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Drawn images (B, 3, H, W) in [-1, 1] -> uint8 (B, 3, R, R), resized as the photos are."""
    return torch.stack([pil_pixels(resize_center_crop(image, resolution)) for image in to_pil(images.cpu())])


def pil_pixels(image) -> torch.Tensor:
    """An RGB PIL image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def batches(items: Sequence, size: int) -> list:
    return [items[start : start + size] for start in range(0, len(items), size)]


# ---- the report ---------------------------------------------------------------------------------


def write_coco_report(record: dict, out_dir: Path) -> Path:
    """report.json, report.md, texts.jsonl (path, caption, text per photo) and examples.png (photo | text
    and caption | redraws) into `out_dir`, each written atomically; returns the Markdown's path."""
    import json

    from ..atomic import atomic_write_bytes
    from ..data.grid import save_grid
    from ..data.images import from_pixels

    out_dir = Path(out_dir)
    record = dict(record)
    texts, examples = record.pop("texts"), record.pop("examples")
    lines = "".join(json.dumps(line) + "\n" for line in texts)
    atomic_write_bytes(out_dir / "texts.jsonl", lines.encode())
    shown = [f"{t['text']} | caption: {t['caption']}" for t in texts[: len(examples["photos"])]]
    redraws = [from_pixels(examples[source]) for source in (TEXT, CAPTION)]
    save_grid(out_dir / "examples.png", from_pixels(examples["photos"]), shown, redraws,
              headers=["photo", "text | caption", f"from the {TEXT}", f"from the {CAPTION}"])  # fmt: skip
    record["files"] = {"texts": "texts.jsonl", "examples": "examples.png"}
    atomic_write_bytes(out_dir / "report.json", (json.dumps(record, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "report.md", coco_markdown(record).encode())
    return out_dir / "report.md"


def coco_markdown(record: dict) -> str:
    settings, machine = record["settings"], record.get("machine", {})
    count = record["rows"][0]["num_images"]
    fid = {(row["guidance_scale"], row["source"]): row["fid"] for row in record["rows"]}
    lines = [
        f"# COCO-style FID: {TEXT} and captions, redrawn by {record.get('pipeline', '?')}",
        "",
        f"{count} photos from `{settings['images']}` (captions: `{record.get('captions_file', '?')}`); FID of each "
        f"set of redraws against the photos, {settings['resolution']}x{settings['resolution']} centre crops, "
        f"features: {record['feature_network']}. Lower is better. Photo i is redrawn from both prompts with seed "
        f"{settings['seed']} + i, {settings['num_inference_steps']} steps.",
        "",
        f"| guidance scale | {TEXT} | {CAPTION} |",
        "|---|---|---|",
    ]
    lines += [f"| {g:g} | {fid[g, TEXT]:.2f} | {fid[g, CAPTION]:.2f} |" for g in settings["guidance_scales"]]
    lines += [
        "",
        "![photo | text and caption | redraw from the text | redraw from the caption](examples.png)",
        "",
        f"- encoder: `{record.get('encoder', '?')}`; texts of every photo: `texts.jsonl`",
        f"- command: `{record.get('command', '')}`",
        f"- machine: {machine.get('device', '?')}; {machine.get('uname', '?')}; torch {machine.get('torch', '?')}",
        f"- date: {record.get('date', '?')}; wall time {record['wall_time_s']:.0f} s",
    ]
    return "\n".join(lines) + "\n"
