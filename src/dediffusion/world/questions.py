"""Closed-form questions about a scene, answered from its scene graph (for VQA).

``questions(scene)`` is deterministic. It asks only questions whose referent is unique in the scene
("what color is the circle?" only when there is exactly one circle), and every question of a kind
shares that kind's closed answer set ``CHOICES[kind]``. The yes/no "exists" questions come in equal
numbers: one "yes" per distinct (colour, shape) pair present and one "no" about a pair that is absent
but close to a present one (same shape with another colour allowed on the background, or same colour
with another shape), drawn from a generator seeded by the scene itself.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from dediffusion.world.scene import ALLOWED_COLORS, BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, Scene
from dediffusion.world.text import POSITION_PHRASES

NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three")
CHOICES: dict[str, tuple[str, ...]] = {
    "count": NUMBER_WORDS,
    "background": tuple(BACKGROUNDS),
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": SIZES,
    "position": POSITIONS,
    "exists": ("yes", "no"),
}
QUESTION_KINDS: tuple[str, ...] = tuple(CHOICES)


@dataclass(frozen=True)
class Question:
    """One question, its answer (a member of ``choices``), its kind, and the kind's answer set."""

    question: str
    answer: str
    kind: str
    choices: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "kind": self.kind,
            "choices": list(self.choices),
        }


def questions(scene: Scene) -> list[Question]:
    """Every question this module asks about ``scene``, in a fixed order.

    Returns:
        count and background first, then per object (cell order): the shape at its position, its
        colour when its shape is unique, its size and position when its (colour, shape) is unique;
        then the yes/no existence questions, each "yes" followed by its "no".
    """
    shapes = Counter(obj.shape for obj in scene.objects)
    pairs = Counter((obj.color, obj.shape) for obj in scene.objects)
    asked = [
        _ask("count", "how many objects are there", NUMBER_WORDS[len(scene.objects) - 1]),
        _ask("background", "what color is the background", scene.background),
    ]
    for obj in scene.objects:
        asked.append(_ask("shape", f"what shape is {POSITION_PHRASES[obj.position]}", obj.shape))
        if shapes[obj.shape] == 1:
            asked.append(_ask("color", f"what color is the {obj.shape}", obj.color))
        if pairs[obj.color, obj.shape] == 1:
            asked.append(_ask("size", f"what size is the {obj.color} {obj.shape}", obj.size))
            asked.append(_ask("position", f"where is the {obj.color} {obj.shape}", obj.position))
    return asked + _existence_questions(scene, list(pairs))


def _existence_questions(scene: Scene, present: list[tuple[str, str]]) -> list[Question]:
    rng = np.random.default_rng(_scene_key(scene))
    colors = ALLOWED_COLORS[scene.background]
    asked: list[Question] = []
    used = set(present)
    for color, shape in present:
        recolored = [(other, shape) for other in colors if (other, shape) not in used]
        reshaped = [(color, other) for other in SHAPES if (color, other) not in used]
        # At most 5 pairs are used, so both lists can never be empty at once.
        first, second = (recolored, reshaped) if rng.random() < 0.5 else (reshaped, recolored)
        candidates = first or second
        absent = candidates[rng.integers(len(candidates))]
        used.add(absent)
        asked.append(_ask("exists", _exists_text(color, shape), "yes"))
        asked.append(_ask("exists", _exists_text(*absent), "no"))
    return asked


def _exists_text(color: str, shape: str) -> str:
    article = "an" if color[0] in "aeiou" else "a"
    return f"is there {article} {color} {shape}"


def _ask(kind: str, text: str, answer: str) -> Question:
    return Question(f"{text}?", answer, kind, CHOICES[kind])


def _scene_key(scene: Scene) -> int:
    """A stable integer from the scene's content (Python's ``hash`` is salted per process)."""
    return zlib.crc32(json.dumps(scene.to_dict(), sort_keys=True).encode())


def _question_vocabulary() -> list[str]:
    words = {"how", "many", "objects", "are", "there", "what", "color", "is", "the", "background"}
    words.update({"shape", "size", "where", "a", "an"})
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    for choices in CHOICES.values():
        for choice in choices:
            words.update(choice.split())
    return sorted(words)


QUESTION_VOCABULARY: list[str] = _question_vocabulary()
