"""The procedural world: scenes, rendering, descriptions, captions and questions, all from a seed.

Example:
    >>> from dediffusion.world import train_scenes, render, describe
    >>> scene = train_scenes(1, seed=0)[0]
    >>> pixels = render(scene, size=32)  # (32, 32, 3) uint8
    >>> text = describe(scene)
"""

from dediffusion.world.questions import CHOICES, QUESTION_KINDS, QUESTION_VOCABULARY, Question, questions
from dediffusion.world.render import image_grid, object_coverage, render, render_batch
from dediffusion.world.sample import write_samples
from dediffusion.world.scene import (
    ALLOWED_COLORS,
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Object,
    Scene,
    sample_scene,
)
from dediffusion.world.split import TEST_SEED, sample_scenes, scene_rng, test_scenes, train_scenes
from dediffusion.world.text import VOCABULARY, describe, human_caption, sample_caption

__all__ = [
    "ALLOWED_COLORS",
    "BACKGROUNDS",
    "CHOICES",
    "COLORS",
    "POSITIONS",
    "QUESTION_KINDS",
    "QUESTION_VOCABULARY",
    "SHAPES",
    "SIZES",
    "TEST_SEED",
    "VOCABULARY",
    "Object",
    "Question",
    "Scene",
    "describe",
    "human_caption",
    "image_grid",
    "object_coverage",
    "questions",
    "render",
    "render_batch",
    "sample_caption",
    "sample_scene",
    "sample_scenes",
    "scene_rng",
    "test_scenes",
    "train_scenes",
    "write_samples",
]
