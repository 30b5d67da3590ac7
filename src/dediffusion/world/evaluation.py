"""The world as an evaluation task (`dediffusion.data.task.Task`): its images with their answer key.

- `test_set(n, size)`: the first `n` scenes of the fixed test split, rendered, with their full
  description and human-style caption as reference texts;
- `few_shot_set(n, size)`: the one-object scenes among the first `n` test scenes, labelled with that
  object's shape and colour (the paper's few-shot classification, from text alone);
- `qa_set(n, size)`: the first `n` test scenes with every question about each (`world.questions`);
- `qa_examples(shots, size)`: solved examples from training scenes (seed `EXAMPLE_SEED`, never test
  scenes), example i a question of kind i in `QUESTION_KINDS` order;
- `scorer`: `WorldScorer`, the perception model's reading scored fact by fact.
"""

from __future__ import annotations

import torch

from ..data.task import LabelledSet
from .questions import QUESTION_KINDS, questions
from .render import render_batch
from .scoring import WorldScorer
from .split import test_scenes, train_scenes
from .text import describe, human_caption

EXAMPLE_SEED = 7  # training scenes the few-shot QA examples are drawn from


class WorldTask:
    name = "world"

    def __init__(self, scorer: WorldScorer | None = None):
        self.scorer = scorer or WorldScorer()

    def test_set(self, n: int, size: int) -> LabelledSet:
        return labelled(test_scenes(n), size)

    def few_shot_set(self, n: int, size: int) -> LabelledSet:
        scenes = [s for s in test_scenes(n) if len(s.objects) == 1]
        labels = {attribute: [getattr(s.objects[0], attribute) for s in scenes] for attribute in ("shape", "color")}
        return labelled(scenes, size, labels=labels)

    def qa_set(self, n: int, size: int) -> LabelledSet:
        scenes = test_scenes(n)
        return labelled(scenes, size, questions=[questions(s) for s in scenes])

    def qa_examples(self, shots: int, size: int) -> LabelledSet:
        scenes = train_scenes(shots, seed=EXAMPLE_SEED) if shots else []
        return labelled(scenes, size, questions=[[example_question(s, i)] for i, s in enumerate(scenes)])


def labelled(scenes, size: int, **extra) -> LabelledSet:
    """Scenes rendered at `size`, with their description and human-style caption."""
    texts = {"description": [describe(s) for s in scenes], "human": [human_caption(s) for s in scenes]}
    images = render_batch(scenes, size=size) if scenes else torch.zeros(0, 3, size, size)
    return LabelledSet(images, list(scenes), texts, **extra)


def example_question(scene, i: int):
    """A question of kind `QUESTION_KINDS[i]` about `scene` (its first question if it has none of that kind)."""
    asked = questions(scene)
    wanted = QUESTION_KINDS[i % len(QUESTION_KINDS)]
    return next((q for q in asked if q.kind == wanted), asked[0])
