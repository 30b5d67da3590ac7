"""Scene sampling, seeds and the fixed test split."""

import hashlib
import json

import pytest

from dediffusion.world import (
    ALLOWED_COLORS,
    BACKGROUNDS,
    COLORS,
    SHAPES,
    SIZES,
    Object,
    Scene,
    describe,
    sample_scenes,
    train_scenes,
)
from dediffusion.world import test_scenes as fixed_test_scenes

# sha256 of the descriptions of the first 50 test scenes. If this changes, the test split changed:
# every number measured on it becomes incomparable with earlier ones. Change it only on purpose.
TEST_SPLIT_SHA256 = "150aa96a7b4b568734649efd38b414b8ec6b7d5b6d14654477b80b35ceab56e3"


def _digest(scenes):
    return hashlib.sha256("\n".join(describe(s) for s in scenes).encode()).hexdigest()


def test_same_seed_same_scenes_and_different_seeds_differ():
    assert train_scenes(50, seed=3) == train_scenes(50, seed=3)
    assert train_scenes(50, seed=3) != train_scenes(50, seed=4)


def test_streams_are_prefix_stable_and_randomly_accessible():
    scenes = train_scenes(30, seed=1)
    assert train_scenes(10, seed=1) == scenes[:10]
    assert train_scenes(5, seed=1, start=20) == scenes[20:25]


def test_test_split_is_fixed():
    first = fixed_test_scenes(50)
    assert fixed_test_scenes(50) == first
    assert fixed_test_scenes(200)[:50] == first
    assert _digest(first) == TEST_SPLIT_SHA256, "the test split changed; see TEST_SPLIT_SHA256"


@pytest.mark.parametrize("seed", [0, 1, 12345, 231100618])
def test_test_split_disjoint_from_training(seed):
    test = set(fixed_test_scenes(300))
    assert test.isdisjoint(train_scenes(300, seed=seed))


@pytest.mark.parametrize("seed", [-1, 2**128, 1.5, True])
def test_bad_seed_raises(seed):
    with pytest.raises(ValueError, match="seed"):
        sample_scenes(1, seed)


def test_scene_graph_invariants():
    scenes = train_scenes(2000, seed=7)
    for scene in scenes:
        assert scene.background in BACKGROUNDS
        assert 1 <= len(scene.objects) <= 3
        cells = [obj.cell for obj in scene.objects]
        assert cells == sorted(set(cells))
        for obj in scene.objects:
            assert obj.shape in SHAPES and obj.size in SIZES and obj.color in COLORS
            assert obj.color in ALLOWED_COLORS[scene.background]
            assert abs(obj.dx) <= 0.08 and abs(obj.dy) <= 0.08 and 0.9 < obj.scale < 1.1
    # every value of every attribute occurs
    objects = [obj for scene in scenes for obj in scene.objects]
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.color for o in objects} == set(COLORS)
    assert {o.size for o in objects} == set(SIZES)
    assert {o.cell for o in objects} == set(range(9))


def test_json_round_trip():
    for scene in train_scenes(100, seed=2):
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_invalid_scenes_raise():
    circle = Object("circle", "red", "small", 0, 0)
    with pytest.raises(ValueError, match="shape"):
        Object("hexagon", "red", "small", 0, 0)
    with pytest.raises(ValueError, match="distinct cells"):
        Scene("gray", (circle, circle))
    with pytest.raises(ValueError, match="not allowed"):
        Scene("navy", (Object("circle", "black", "small", 0, 0),))
    with pytest.raises(ValueError, match="1 to 3"):
        Scene("gray", ())
