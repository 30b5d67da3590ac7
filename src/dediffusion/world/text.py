"""Words about scenes: the full description, sampled training captions, terse human-style captions.

All texts are lowercase words from the closed ``VOCABULARY`` separated by single spaces, with no
punctuation, so ``text.split()`` is the word-level tokenisation. Objects are joined with "and"; the
background, when named, comes last as "on a <colour> background".

- ``describe(scene)``: every object (size, colour, shape, position) in row-major cell order and the
  background; deterministic.
- ``sample_caption(scene, rng)``: what a text-to-image model is pretrained on: random subsets of the
  facts in random order, with some attributes dropped, sometimes the full description, sometimes "";
  with ``p_loose``, some captions are loose shuffled words instead of phrases.
- ``human_caption(scene)``: colour and shape of the one or two most salient objects, nothing else.
"""

from __future__ import annotations

import numpy as np

from dediffusion.world.scene import BACKGROUNDS, COLORS, SHAPES, SIZES, Object, Scene

POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}
GENERIC_NOUN = "shape"  # stands in for a dropped shape name: "a red shape"
_FILLER = ("a", "and", "the", "on", GENERIC_NOUN)  # mixed into loose captions

# Probabilities that shape one sampled caption (see ``sample_caption``).
KEEP_OBJECT = 0.7
KEEP_BACKGROUND = 0.5
KEEP_ATTRIBUTE = {"size": 0.5, "color": 0.8, "shape": 0.8, "position": 0.5}
# Relative visual area of each unit shape (see render._inside); breaks ties in salience.
_SHAPE_AREA = {"circle": 3.14, "square": 3.24, "triangle": 2.0, "diamond": 2.65, "cross": 2.15}


def describe(scene: Scene) -> str:
    """The full canonical description, e.g. "a large red circle at the top left and a small blue
    square in the center on a gray background"."""
    objects = " and ".join(_object_phrase(obj, True, True, True, True) for obj in scene.objects)
    return f"{objects} on a {scene.background} background"


def sample_caption(
    scene: Scene, rng: np.random.Generator, p_empty: float = 0.1, p_full: float = 0.2, p_loose: float = 0.0
) -> str:
    """A random caption with only true facts, for pretraining text-to-image models.

    Args:
        scene: the scene to caption.
        rng: generator for the random choices; it is advanced.
        p_empty: probability of the empty caption (for classifier-free guidance).
        p_full: probability that a non-empty caption names every fact (the full ``describe(scene)``
            unless it is loose).
        p_loose: probability that a non-empty caption is loose words instead of phrases: the chosen
            facts' content words (no articles, no "at the"), shuffled, with some repeated and some
            filler words ("a", "and", ...) mixed in, as a token-level encoder may write them.
    Returns:
        the caption: a random subset of the objects in random order, each with a random subset of
        its attributes (at least one), optionally followed by the background.
    Raises:
        ValueError: if a probability lies outside [0, 1].
    """
    if not all(0.0 <= p <= 1.0 for p in (p_empty, p_full, p_loose)):
        raise ValueError(f"p_empty, p_full and p_loose must lie in [0, 1], got {p_empty}, {p_full}, {p_loose}")
    if rng.random() < p_empty:
        return ""
    loose = p_loose > 0 and rng.random() < p_loose  # no draw at 0: the caption stream stays as it was
    if rng.random() < p_full:
        if not loose:
            return describe(scene)
        facts = [(obj, dict.fromkeys(KEEP_ATTRIBUTE, True)) for obj in scene.objects]
        return _loose_words(facts, scene.background, rng)
    objects = [obj for obj in scene.objects if rng.random() < KEEP_OBJECT]
    with_background = rng.random() < KEEP_BACKGROUND
    if not objects and not with_background:
        objects = [scene.objects[rng.integers(len(scene.objects))]]
    facts = [(objects[k], _sampled_attributes(rng)) for k in rng.permutation(len(objects))]
    if loose:
        return _loose_words(facts, scene.background if with_background else None, rng)
    phrases = [_object_phrase(obj, **keep) for obj, keep in facts]
    if not phrases:
        return f"a {scene.background} background"
    background = f" on a {scene.background} background" if with_background else ""
    return " and ".join(phrases) + background


def _loose_words(facts: list[tuple[Object, dict[str, bool]]], background: str | None, rng: np.random.Generator) -> str:
    words = [word for obj, keep in facts for word in _content_words(obj, keep)]
    words += [background] if background is not None else []
    extra = int(rng.integers(0, len(words) + 1))  # repeats and filler, up to as many again
    words += [words[rng.integers(len(words))] if rng.random() < 0.5 else _FILLER[rng.integers(len(_FILLER))]
              for _ in range(extra)]  # fmt: skip
    return " ".join(words[k] for k in rng.permutation(len(words)))


def _content_words(obj: Object, keep: dict[str, bool]) -> list[str]:
    words = [obj.size] if keep["size"] else []
    words += [obj.color] if keep["color"] else []
    words += [obj.shape] if keep["shape"] else []
    return words + (obj.position.split() if keep["position"] else [])


def human_caption(scene: Scene) -> str:
    """A terse, fixed caption: colour and shape of the most salient object, and of the second most
    salient one when it is large too. Never sizes, positions or the background."""
    ranked = sorted(scene.objects, key=_salience, reverse=True)
    named = [ranked[0]] + [obj for obj in ranked[1:2] if obj.size == "large"]
    return " and ".join(_object_phrase(obj, False, True, True, False) for obj in named)


def _salience(obj: Object) -> tuple[bool, float, int]:
    # Large before small, then apparent area; on an exact tie the earlier cell wins.
    return obj.size == "large", obj.scale**2 * _SHAPE_AREA[obj.shape], -obj.cell


def _sampled_attributes(rng: np.random.Generator) -> dict[str, bool]:
    keep = {name: bool(rng.random() < p) for name, p in KEEP_ATTRIBUTE.items()}
    if not any(keep.values()):
        keep["color"] = True
    return keep


def _object_phrase(obj: Object, size: bool, color: bool, shape: bool, position: bool) -> str:
    words = [obj.size] if size else []
    words += [obj.color] if color else []
    words += [obj.shape if shape else GENERIC_NOUN]
    words += [POSITION_PHRASES[obj.position]] if position else []
    return f"{_article(words[0])} {' '.join(words)}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _vocabulary() -> list[str]:
    words = {"a", "an", "and", "on", "background", GENERIC_NOUN}
    words.update(SIZES, COLORS, SHAPES, BACKGROUNDS)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    return sorted(words)


VOCABULARY: list[str] = _vocabulary()
