"""The world's scorer: how many facts of a true scene graph a predicted scene graph gets right.

Facts of a scene (what its full description states; DESIGN.md section 5):

- ``("background", colour)``: one per scene;
- per object in grid cell ``p`` (a name from ``world.POSITIONS``, e.g. ``"top left"``):
  ``("position", p)`` (an object is there), ``("shape", p, shape)``, ``("color", p, colour)`` and
  ``("size", p, size)``.

A scene with ``n`` objects thus has ``1 + 4n`` facts. Objects are matched by grid cell only: an object
predicted one cell off loses all four of its facts (and counts as a hallucination, below).

``fact_accuracy(true, predicted) = matched / (len(scene_facts(true)) + hallucinated)``, where
``matched`` is the number of true facts also among the predicted facts and ``hallucinated`` is the
number of predicted objects in cells that are empty in the true scene. Each hallucinated object counts
as one wrong ``position`` fact; its attributes are not counted, since nothing true stands against
them. So a perfect reading scores 1.0, a missed object loses its 4 facts, an extra object adds one
wrong fact, and no prediction can score 1.0 by claiming more objects. ``fact_precision`` (matched /
predicted facts) is reported beside it for readers who want the other side.

Scenes are ``world.Scene`` objects or dicts in the ``Scene.to_dict()`` layout (``background`` plus
``objects``, each with ``shape``, ``color``, ``size``, ``row``, ``col``; jitter keys are ignored).
Predicted dicts need not satisfy the scene invariants (any number of objects, any colour on any
background), which is what a perception model reading a reconstruction returns.

`WorldScorer` is the world's `eval.task.Scorer`: the perception model reads the images, and these
functions score what it read against the true scenes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .scene import GRID, POSITIONS, Object, Scene

SceneLike = Scene | Mapping[str, Any]
Fact = tuple[str, ...]

FACT_KINDS: tuple[str, ...] = ("background", "position", "shape", "color", "size")
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size")


def scene_facts(scene: SceneLike) -> set[Fact]:
    """The facts of ``scene`` as tuples (see the module docstring).

    Raises:
        ValueError: if the scene lacks a key, has an object outside the grid, or two objects share a cell.
    """
    background, cells = _read(scene)
    facts: set[Fact] = {("background", background)}
    for cell, attributes in cells.items():
        position = POSITIONS[cell]
        facts.add(("position", position))
        facts.update((name, position, value) for name, value in zip(ATTRIBUTES, attributes))
    return facts


def count_facts(true_scene: SceneLike, predicted_scene: SceneLike) -> dict[str, tuple[int, int]]:
    """Per fact kind, ``(correct, counted)`` for one scene; ``counted`` includes hallucinations.

    Summing ``correct`` and ``counted`` over the kinds gives the numerator and denominator of
    ``fact_accuracy``.
    """
    true_facts = scene_facts(true_scene)
    predicted_facts = scene_facts(predicted_scene)
    counts = {kind: [0, 0] for kind in FACT_KINDS}
    for fact in true_facts:
        counts[fact[0]][1] += 1
        counts[fact[0]][0] += fact in predicted_facts
    counts["position"][1] += _hallucinated(true_facts, predicted_facts)
    return {kind: (correct, counted) for kind, (correct, counted) in counts.items()}


def fact_accuracy(true_scene: SceneLike, predicted_scene: SceneLike) -> float:
    """Fraction of the true scene's facts found in the prediction, hallucinated objects counted wrong."""
    counts = count_facts(true_scene, predicted_scene).values()
    return sum(correct for correct, _ in counts) / sum(counted for _, counted in counts)


def objects_per_image(scenes: Sequence[SceneLike]) -> float:
    """Mean number of objects in `scenes`, true or predicted (a redraw with extra objects shows here)."""
    if not scenes:
        raise ValueError("objects_per_image needs at least one scene")
    return sum(len(s["objects"] if isinstance(s, Mapping) else s.objects) for s in scenes) / len(scenes)


def fact_precision(true_scene: SceneLike, predicted_scene: SceneLike) -> float:
    """Fraction of the predicted facts that are true (matched / number of predicted facts)."""
    predicted_facts = scene_facts(predicted_scene)
    return len(predicted_facts & scene_facts(true_scene)) / len(predicted_facts)


def scene_accuracy(true_scenes: Sequence[SceneLike], predicted_scenes: Sequence[SceneLike]) -> float:
    """Mean ``fact_accuracy`` over paired scenes (every scene weighs the same).

    Raises:
        ValueError: if the two sequences differ in length or are empty.
    """
    _check_pairs(true_scenes, predicted_scenes)
    scores = [fact_accuracy(t, p) for t, p in zip(true_scenes, predicted_scenes)]
    return sum(scores) / len(scores)


def accuracy_by_kind(
    true_scenes: Sequence[SceneLike], predicted_scenes: Sequence[SceneLike]
) -> dict[str, float | None]:
    """Per fact kind, correct / counted pooled over all scenes; ``"all"`` pools every kind. A kind
    with nothing to count (e.g. object facts when no scene has an object) is None.

    Raises:
        ValueError: if the two sequences differ in length or are empty.
    """
    _check_pairs(true_scenes, predicted_scenes)
    totals = {kind: [0, 0] for kind in (*FACT_KINDS, "all")}
    for true_scene, predicted_scene in zip(true_scenes, predicted_scenes):
        for kind, (correct, counted) in count_facts(true_scene, predicted_scene).items():
            for key in (kind, "all"):
                totals[key][0] += correct
                totals[key][1] += counted
    return {kind: correct / counted if counted else None for kind, (correct, counted) in totals.items()}


def _hallucinated(true_facts: set[Fact], predicted_facts: set[Fact]) -> int:
    return sum(1 for fact in predicted_facts if fact[0] == "position" and fact not in true_facts)


def _check_pairs(true_scenes: Sequence[SceneLike], predicted_scenes: Sequence[SceneLike]) -> None:
    if len(true_scenes) != len(predicted_scenes) or not true_scenes:
        raise ValueError(
            f"need equally many true and predicted scenes (at least one), got {len(true_scenes)} "
            f"and {len(predicted_scenes)}"
        )


def _read(scene: SceneLike) -> tuple[str, dict[int, tuple[str, ...]]]:
    """``(background, {cell: (shape, color, size)})`` from a Scene or a ``to_dict``-style dict."""
    if isinstance(scene, Scene):
        return scene.background, dict(map(_read_object, scene.objects))
    background = _get(scene, "background", "scene")
    cells: dict[int, tuple[str, ...]] = {}
    for obj in _get(scene, "objects", "scene"):
        cell, attributes = _read_object(obj)
        if cell in cells:
            raise ValueError(f"two objects in cell {POSITIONS[cell]!r}; a cell holds at most one object")
        cells[cell] = attributes
    return background, cells


def _read_object(obj: Object | Mapping[str, Any]) -> tuple[int, tuple[str, ...]]:
    """``(cell, (shape, color, size))`` from an Object or a dict with those keys plus row and col."""
    if isinstance(obj, Object):
        return obj.cell, tuple(getattr(obj, name) for name in ATTRIBUTES)
    row, col = _get(obj, "row", "object"), _get(obj, "col", "object")
    if not (0 <= row < GRID and 0 <= col < GRID):
        raise ValueError(f"object at row {row}, col {col} lies outside the {GRID}x{GRID} grid")
    return GRID * row + col, tuple(_get(obj, name, "object") for name in ATTRIBUTES)


def _get(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise ValueError(f"{what} dict lacks {key!r} (expected the Scene.to_dict() layout): {data!r}")
    return data[key]


class WorldScorer:
    """The world's `Scorer` (see `dediffusion.data.task`): the perception model reads each image's
    scene graph, scored against the true scene; `summarize` counts the true scenes' objects."""

    def __init__(self, read_scenes=None):
        self._read_scenes = read_scenes  # None: the bundled perception model, loaded on first use

    def read(self, images: torch.Tensor) -> list[dict]:
        if self._read_scenes is None:
            from .perception import PerceptionModel

            self._read_scenes = PerceptionModel.load().predict
        return [p for chunk in images.split(256) for p in self._read_scenes(chunk)]

    def score(self, images: torch.Tensor, truths: Sequence[SceneLike]) -> dict[str, Any]:
        predictions = self.read(images)
        return {
            "scene_accuracy": scene_accuracy(truths, predictions),
            "accuracy_by_kind": accuracy_by_kind(truths, predictions),
            "objects_per_image": objects_per_image(predictions),
        }

    def summarize(self, truths: Sequence[SceneLike]) -> dict[str, Any]:
        return {"objects_per_image": objects_per_image(truths)}
