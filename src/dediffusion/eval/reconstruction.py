"""Reconstruction and prompt transfer: redraw images from texts with a decoder and score the redraws.

- `generate_from_prompts(decoder, prompts, ...)`: images from texts; image i always uses seed
  `seed + i`, so every prompt source is drawn with the same noise.
- `score_prompt_sources(decoder, sources, references, ...)`: for each prompt source (name -> one text
  per reference image) and each guidance scale, FD-EffNet of the redraws against the references and,
  when the true scenes and a scene reader (the world's perception model) are given, scene accuracy
  and its split by fact kind (which facts a decoder gets wrong: background, position, shape, ...) and
  the objects per image the reader finds (a decoder that draws extra objects is off the data).
- `best_over_sweep(cells)`: each source's best value of each metric over the guidance sweep.

Metric maths lives in `eval/frechet.py` and `eval/scene_accuracy.py`; this module only runs decoders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from .frechet import EffNetFeatures, feature_statistics, frechet_distance
from .scene_accuracy import accuracy_by_kind, objects_per_image, scene_accuracy

logger = logging.getLogger(__name__)

Cells = dict[str, dict[str, dict]]  # source -> guidance -> metric -> value (accuracy_by_kind: kind -> value)


def generate_from_prompts(
    decoder,
    prompts: Sequence[str],
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    batch_size: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Images (N, 3, H, W), float32, generated from `prompts`, `batch_size` at a time; image i uses seed
    `seed + i`. A `dtype` other than float32 samples under autocast to it (bfloat16: faster on CPUs with
    AMX: the evaluation without question answering in 846 s against 1357 s, README)."""
    chunks = []
    for i in range(0, len(prompts), batch_size):
        batch = list(prompts[i : i + batch_size])
        generators = [torch.Generator(decoder.device).manual_seed(seed + i + k) for k in range(len(batch))]
        with torch.autocast(decoder.device.type, dtype=dtype, enabled=dtype != torch.float32):
            images = decoder.generate(batch, None, guidance_scale, num_inference_steps, generators)
        chunks.append(images.float().cpu())
    return torch.cat(chunks)


def score_prompt_sources(
    decoder,
    sources: Mapping[str, Sequence[str]],
    references: torch.Tensor,
    guidance_scales: Sequence[float],
    num_inference_steps: int,
    features: EffNetFeatures,
    scenes: Sequence | None = None,
    read_scenes: Callable[[torch.Tensor], list] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Cells:
    """{source: {str(guidance): {"scene_accuracy", "accuracy_by_kind", "objects_per_image", "fd_effnet"}}}
    for redraws of `references` (N, 3, H, W).

    Scene accuracy, accuracy by kind and objects per image are None unless both `scenes` (the true
    scene of each reference) and `read_scenes` are given. A source whose texts are all empty is drawn
    once: guidance does not change it.
    """
    for name, texts in sources.items():
        if len(texts) != len(references):
            raise ValueError(f"prompt source {name!r} has {len(texts)} texts for {len(references)} images")
    real = feature_statistics(features(references))
    cells: Cells = {}
    for name, texts in sources.items():
        unconditional = not any(t.strip() for t in texts)
        for scale in guidance_scales[:1] if unconditional else guidance_scales:
            start = time.perf_counter()
            images = generate_from_prompts(decoder, texts, scale, num_inference_steps, seed=seed, dtype=dtype)
            cell = _scene_scores(images, scenes, read_scenes)
            cell["fd_effnet"] = frechet_distance(*real, *feature_statistics(features(images)))
            cells.setdefault(name, {})[_key(scale)] = cell
            logger.info("%s @ guidance %g: %s (%.0f s)", name, scale, cell, time.perf_counter() - start)
        if unconditional:
            cells[name] = {_key(s): cells[name][_key(guidance_scales[0])] for s in guidance_scales}
    return cells


def best_over_sweep(cells: Cells) -> dict[str, dict[str, float | None]]:
    """Per source: the highest scene accuracy (with its accuracy by kind) and the lowest FD-EffNet over
    the sweep, with their scales."""
    out = {}
    for source, by_scale in cells.items():
        fd_scale = min(by_scale, key=lambda s: by_scale[s]["fd_effnet"])
        row = {"fd_effnet": by_scale[fd_scale]["fd_effnet"], "fd_effnet_guidance": float(fd_scale)}
        if all(c["scene_accuracy"] is not None for c in by_scale.values()):
            acc_scale = max(by_scale, key=lambda s: by_scale[s]["scene_accuracy"])
            best = by_scale[acc_scale]
            row.update(
                scene_accuracy=best["scene_accuracy"],
                scene_accuracy_guidance=float(acc_scale),
                accuracy_by_kind=best["accuracy_by_kind"],
                objects_per_image=best.get("objects_per_image"),
            )
        else:
            row.update(scene_accuracy=None, scene_accuracy_guidance=None, accuracy_by_kind=None, objects_per_image=None)
        out[source] = row
    return out


def _scene_scores(images: torch.Tensor, scenes, read_scenes) -> dict:
    """Scene accuracy, accuracy by fact kind and objects per image of the redraws (None without an answer key)."""
    if scenes is None or read_scenes is None:
        return {"scene_accuracy": None, "accuracy_by_kind": None, "objects_per_image": None}
    predictions = [p for chunk in images.split(256) for p in read_scenes(chunk)]
    return {
        "scene_accuracy": scene_accuracy(scenes, predictions),
        "accuracy_by_kind": accuracy_by_kind(scenes, predictions),
        "objects_per_image": objects_per_image(predictions),
    }


def _key(scale: float) -> str:
    return str(float(scale))
