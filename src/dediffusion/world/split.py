"""Seeds and splits: which random stream every scene comes from.

Rule: scene ``i`` of a stream is drawn from its own generator,
``SeedSequence(seed, spawn_key=(stream, i))``. Training data uses ``TRAIN_STREAM`` with any seed; the
test split uses ``TEST_STREAM`` with the fixed ``TEST_SEED``. A seed below 2**128 fills at most the
four entropy words that numpy pads to before appending the spawn key, so the stream number always sits
in its own word and no training seed can ever reproduce a test-split generator. (The scenes are
independent draws: a short description such as "a small red circle in the center on a gray
background" can occur in both splits, with different jitter; the images are never the same.)

Per-scene generators make every list prefix-stable (``train_scenes(10) == train_scenes(100)[:10]``)
and give random access (``start``), so data loader workers can generate any slice on their own.
"""

from __future__ import annotations

import numpy as np

from dediffusion.world.scene import Scene, sample_scene

TRAIN_STREAM = 0
TEST_STREAM = 1
TEST_SEED = 231100618  # arXiv 2311.00618; any fixed value works, it only has to never change
MAX_SEED = 2**128


def scene_rng(seed: int, index: int, stream: int = TRAIN_STREAM) -> np.random.Generator:
    """The generator that scene ``index`` of ``stream`` under ``seed`` is drawn from.

    Raises:
        ValueError: if ``seed`` is not an int in [0, 2**128) or ``index`` is negative.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**128), got {seed!r}")
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream, index)))


def sample_scenes(n: int, seed: int, start: int = 0, stream: int = TRAIN_STREAM) -> list[Scene]:
    """Scenes ``start .. start + n - 1`` of ``stream`` under ``seed``.

    Args:
        n: number of scenes (>= 0).
        seed: int in [0, 2**128).
        start: index of the first scene, for slices of a long stream.
        stream: ``TRAIN_STREAM`` for training data; ``TEST_STREAM`` is reserved for ``test_scenes``.
    Returns:
        a list of ``n`` scenes.
    Raises:
        ValueError: on a negative ``n`` or ``start`` or a bad seed.
    """
    if n < 0:
        raise ValueError(f"number of scenes must be >= 0, got {n}")
    return [sample_scene(scene_rng(seed, i, stream)) for i in range(start, start + n)]


def train_scenes(n: int, seed: int = 0, start: int = 0) -> list[Scene]:
    """Training scenes; never overlaps the generators of ``test_scenes`` whatever the seed."""
    return sample_scenes(n, seed, start, TRAIN_STREAM)


def test_scenes(n: int = 1000, start: int = 0) -> list[Scene]:
    """The fixed test split: the first ``n`` scenes (from ``start``) of the test stream."""
    return sample_scenes(n, TEST_SEED, start, TEST_STREAM)


test_scenes.__test__ = False  # the name starts with "test"; keep pytest from collecting it
