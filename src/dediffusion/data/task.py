"""What an evaluation needs from a world (or any labelled image set) beyond images: its interface.

It lives in the core (`data`) so that `eval` and the world plug-in both depend on it and not on each other.

`eval` scores encoders and decoders on images; it knows nothing of any particular world. A task
supplies the answer key through this interface, and the world plug-in implements it
(`dediffusion.world.evaluation.WorldTask`); an outside user can implement it for their own data.

- `Scorer.score(images, truths)`: reads images (redraws) and scores them against each image's truth:
  ``{"scene_accuracy": float, "accuracy_by_kind": {kind: float}, "objects_per_image": float}``;
  `Scorer.summarize(truths)`: the same statistics of the truths themselves (``objects_per_image``).
- `LabelledSet`: images with their truths (opaque to eval, read only by the scorer), the texts people
  would write for them (``reference_texts``: source name -> one text per image), per-image class
  labels for few-shot classification, and per-image questions for question answering (each with
  ``question``, ``choices``, ``answer`` and ``kind``).
- `Task`: ``test_set(n, size)``, ``few_shot_set(n, size)``, ``qa_set(n, size)`` and
  ``qa_examples(shots, size)`` (solved examples for few-shot prompts, one question per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


class Scorer(Protocol):
    def score(self, images: torch.Tensor, truths: Sequence[Any]) -> dict[str, Any]: ...

    def summarize(self, truths: Sequence[Any]) -> dict[str, Any]: ...


@dataclass
class LabelledSet:
    images: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    truths: list[Any]  # one answer key per image, read by the task's scorer
    reference_texts: dict[str, list[str]] = field(default_factory=dict)  # e.g. "description", "human"
    labels: dict[str, list[str]] = field(default_factory=dict)  # attribute -> one class per image
    questions: list[list[Any]] = field(default_factory=list)  # per image: question, choices, answer, kind


class Task(Protocol):
    name: str
    scorer: Scorer

    def test_set(self, n: int, size: int) -> LabelledSet: ...

    def few_shot_set(self, n: int, size: int) -> LabelledSet: ...

    def qa_set(self, n: int, size: int) -> LabelledSet: ...

    def qa_examples(self, shots: int, size: int) -> LabelledSet: ...
