"""Scene graphs of the procedural world: vocabularies, dataclasses, sampling, JSON round trip.

A scene is a background colour plus 1-3 objects, each in its own cell of a 3x3 grid. Every object has
the attributes that words name (shape, colour, size, grid cell) and continuous jitter that words do
not name (offset ``dx``/``dy`` within the cell, ``scale``, ``shade``). ``sample_scene(rng)`` is a
pure function of the generator's state, so scenes are reproducible from a seed (see ``split.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SIZES: tuple[str, ...] = ("small", "large")

# sRGB values chosen to stay apart from each other and (see ALLOWED_COLORS) from the background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 175, 60),
    "blue": (40, 90, 235),
    "yellow": (250, 225, 40),
    "purple": (150, 55, 200),
    "orange": (250, 135, 25),
    "white": (248, 248, 248),
    "black": (15, 15, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "beige": (222, 205, 165),
    "navy": (25, 35, 95),
    "pink": (240, 170, 195),
}
# Object colours that contrast with each background; a scene never uses the others.
ALLOWED_COLORS: dict[str, tuple[str, ...]] = {
    "gray": tuple(COLORS),
    "beige": ("red", "green", "blue", "purple", "orange", "black"),
    "navy": ("red", "green", "yellow", "orange", "white"),
    "pink": ("red", "green", "blue", "yellow", "purple", "black"),
}

# Grid cells, row-major; index = 3 * row + col.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
GRID = 3
MAX_OBJECTS = 3

# Jitter ranges (uniform). Offsets are fractions of a cell; adjacent large objects overlap by at
# most ~0.1 cell because offset + largest half-extent stays below ~0.55 cell.
OFFSET_RANGE = 0.08
SCALE_RANGE = (0.94, 1.06)
SHADE_RANGE = 0.12
BACKGROUND_SHADE_RANGE = 0.06


@dataclass(frozen=True)
class Object:
    """One object: named attributes plus unnamed continuous jitter."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: float = 0.0  # offset from the cell centre, fraction of a cell
    dy: float = 0.0
    scale: float = 1.0  # multiplies the size's nominal extent
    shade: float = 0.0  # > 0 lightens towards white, < 0 darkens towards black

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("color", self.color, tuple(COLORS))
        _check_choice("size", self.size, SIZES)
        for name in ("row", "col"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < GRID:
                raise ValueError(f"object {name} must be an int in [0, {GRID}), got {value!r}")

    @property
    def cell(self) -> int:
        return GRID * self.row + self.col

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    """A background colour and 1-3 objects in distinct grid cells, kept in row-major cell order."""

    background: str
    objects: tuple[Object, ...]
    background_shade: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("background", self.background, tuple(BACKGROUNDS))
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        cells = [obj.cell for obj in self.objects]
        if cells != sorted(set(cells)):
            raise ValueError(f"objects must sit in distinct cells in row-major order, got cells {cells}")
        for obj in self.objects:
            if obj.color not in ALLOWED_COLORS[self.background]:
                raise ValueError(f"color {obj.color!r} is not allowed on a {self.background} background")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``Scene.from_dict(scene.to_dict()) == scene``."""
        return {
            "background": self.background,
            "background_shade": self.background_shade,
            "objects": [asdict(obj) for obj in self.objects],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Inverse of ``to_dict``. Raises ValueError on unknown attributes or broken invariants."""
        objects = tuple(Object(**obj) for obj in data["objects"])
        return cls(data["background"], objects, float(data.get("background_shade", 0.0)))


# Uniform draws per scene: background, count, background shade, 9 cell keys, 7 per object.
_DRAWS_PER_OBJECT = 7
_DRAWS_PER_SCENE = 3 + GRID * GRID + MAX_OBJECTS * _DRAWS_PER_OBJECT


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene from ``rng``: uniform background, object count, distinct cells and attributes.

    Every scene consumes the same number of draws (one call to ``rng.random``), which keeps sampling
    fast and makes the mapping from generator state to scene easy to reason about.

    Args:
        rng: the generator to draw from; it is advanced.
    Returns:
        a Scene with objects sorted by cell.
    """
    u = rng.random(_DRAWS_PER_SCENE)
    background = _pick(tuple(BACKGROUNDS), u[0])
    num_objects = 1 + int(u[1] * MAX_OBJECTS)
    cells = sorted(np.argsort(u[3 : 3 + GRID * GRID])[:num_objects].tolist())
    first = 3 + GRID * GRID
    objects = tuple(
        _object_from_draws(u[first + k * _DRAWS_PER_OBJECT :], cell, ALLOWED_COLORS[background])
        for k, cell in enumerate(cells)
    )
    shade = BACKGROUND_SHADE_RANGE * (2.0 * float(u[2]) - 1.0)
    return Scene(background, objects, shade)


def _object_from_draws(u: np.ndarray, cell: int, colors: tuple[str, ...]) -> Object:
    """Map 7 uniform draws in [0, 1) to an object in ``cell``."""
    row, col = divmod(cell, GRID)
    low, high = SCALE_RANGE
    return Object(
        shape=_pick(SHAPES, u[0]),
        color=_pick(colors, u[1]),
        size=_pick(SIZES, u[2]),
        row=row,
        col=col,
        dx=OFFSET_RANGE * (2.0 * float(u[3]) - 1.0),
        dy=OFFSET_RANGE * (2.0 * float(u[4]) - 1.0),
        scale=low + (high - low) * float(u[5]),
        shade=SHADE_RANGE * (2.0 * float(u[6]) - 1.0),
    )


def _pick(choices: tuple[str, ...], u: float) -> str:
    return choices[int(u * len(choices))]


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
