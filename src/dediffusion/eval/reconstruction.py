"""Reconstruction and prompt transfer: redraw images from texts with a decoder and score the redraws.

- `score_prompt_sources(decoder, sources, references, ...)`: for each prompt source (name -> one text
  per reference image) and each guidance scale, FD-EffNet of the redraws against the references and,
  when an answer key and a scorer are given (`data.task`; the world's reads scene graphs with its
  perception model), scene accuracy and its split by fact kind (which facts a decoder gets wrong:
  background, position, shape, ...) and the objects per image (a decoder that draws extra objects is
  off the data).
- `best_over_sweep(cells)`: each source's best value of each metric over the guidance sweep.

Metric maths lives in `eval/frechet.py` and in the task's scorer; this module only runs decoders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import torch

from ..data.task import Scorer
from ..models.sampling import generate_from_prompts
from .frechet import EffNetFeatures, feature_statistics, frechet_distance

logger = logging.getLogger(__name__)

Cells = dict[str, dict[str, dict]]  # source -> guidance -> metric -> value (accuracy_by_kind: kind -> value)


def score_prompt_sources(
    decoder,
    sources: Mapping[str, Sequence[str]],
    references: torch.Tensor,
    guidance_scales: Sequence[float],
    num_inference_steps: int,
    features: EffNetFeatures,
    truths: Sequence | None = None,
    scorer: Scorer | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Cells:
    """{source: {str(guidance): {"scene_accuracy", "accuracy_by_kind", "objects_per_image", "fd_effnet"}}}
    for redraws of `references` (N, 3, H, W).

    Scene accuracy, accuracy by kind and objects per image are None unless both `truths` (the answer
    key of each reference) and a `scorer` (`data.task.Scorer`) are given. A source whose texts are all empty is drawn
    once: guidance does not change it.
    """
    for name, texts in sources.items():
        if len(texts) != len(references):
            raise ValueError(f"prompt source {name!r} has {len(texts)} texts for {len(references)} images")
    from ..progress import progress_bar

    real = feature_statistics(features(references))
    cells: Cells = {}
    empty = {name for name, texts in sources.items() if not any(t.strip() for t in texts)}
    total = len(references) * sum(1 if name in empty else len(guidance_scales) for name in sources)
    bar = progress_bar(total, "reconstruction", unit="image")
    for name, texts in sources.items():
        unconditional = name in empty
        for scale in guidance_scales[:1] if unconditional else guidance_scales:
            start = time.perf_counter()
            images = generate_from_prompts(decoder, texts, scale, num_inference_steps, seed=seed, dtype=dtype)
            cell = _scene_scores(images, truths, scorer)
            cell["fd_effnet"] = frechet_distance(*real, *feature_statistics(features(images)))
            cells.setdefault(name, {})[_key(scale)] = cell
            bar.update(len(references))
            logger.info("%s @ guidance %g: %s (%.0f s)", name, scale, cell, time.perf_counter() - start)
        if unconditional:
            cells[name] = {_key(s): cells[name][_key(guidance_scales[0])] for s in guidance_scales}
    bar.close()
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


def _scene_scores(images: torch.Tensor, truths, scorer: Scorer | None) -> dict:
    """The scorer's scene accuracy, accuracy by fact kind and objects per image (None without an answer key)."""
    if truths is None or scorer is None:
        return {"scene_accuracy": None, "accuracy_by_kind": None, "objects_per_image": None}
    return scorer.score(images, truths)


def _key(scale: float) -> str:
    return str(float(scale))
