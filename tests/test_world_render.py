"""Rasterisation: colours land where objects are, sizes differ, objects barely overlap."""

import numpy as np
import pytest
import torch

from dediffusion.world import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    Object,
    Scene,
    image_grid,
    object_coverage,
    render,
    render_batch,
    train_scenes,
)
from dediffusion.world.render import object_geometry


def _nearest(pixel, palette):
    return min(palette, key=lambda name: np.sum((np.asarray(palette[name]) - pixel.astype(float)) ** 2))


def _full_coverage(obj, size):
    top, left, coverage = object_coverage(obj, size)
    full = np.zeros((size, size), np.float32)
    full[top : top + coverage.shape[0], left : left + coverage.shape[1]] = coverage
    return full


def test_render_is_deterministic_uint8():
    scenes = train_scenes(20, seed=0)
    first = [render(s) for s in scenes]
    assert all(img.dtype == np.uint8 and img.shape == (32, 32, 3) for img in first)
    assert all(np.array_equal(a, render(s)) for a, s in zip(first, scenes, strict=True))
    other = [render(s) for s in train_scenes(20, seed=1)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_pixel_at_object_centre_has_its_colour():
    for scene in train_scenes(300, seed=3):
        image = render(scene)
        for obj in scene.objects:
            cx, cy, _ = object_geometry(obj, 32)
            assert _nearest(image[int(cy), int(cx)], COLORS) == obj.color


def test_corners_of_empty_cells_are_background():
    checked = 0
    for scene in train_scenes(300, seed=4):
        image = render(scene)
        occupied = {obj.cell for obj in scene.objects}
        for cell, (r, c) in zip((0, 2, 6, 8), ((0, 0), (0, 31), (31, 0), (31, 31)), strict=True):
            if cell not in occupied:
                assert _nearest(image[r, c], BACKGROUNDS) == scene.background
                checked += 1
    assert checked > 300
    plain = render(Scene("gray", (Object("circle", "red", "large", 1, 1),)))
    assert (plain[[0, 0, -1, -1], [0, -1, 0, -1]] == BACKGROUNDS["gray"]).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_large_objects_cover_more_pixels_than_small(shape):
    def covered(size):
        image = render(Scene("gray", (Object(shape, "red", size, 1, 1),)))
        return int((np.abs(image.astype(int) - BACKGROUNDS["gray"]).sum(-1) > 30).sum())

    small, large = covered("small"), covered("large")
    assert 15 < small and 1.6 * small < large < 120


def test_objects_in_distinct_cells_barely_overlap():
    worst = 0.0
    for scene in train_scenes(500, seed=5):
        masks = [_full_coverage(obj, 32) for obj in scene.objects]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                shared = np.minimum(masks[i], masks[j]).sum()
                worst = max(worst, shared / min(masks[i].sum(), masks[j].sum()))
    assert worst < 0.1


def test_anti_aliasing_gives_intermediate_values_and_size_is_configurable():
    scene = Scene("gray", (Object("circle", "white", "large", 1, 1),))
    values = np.unique(render(scene)[..., 0])
    assert len(values) > 4  # edges blend between background and object
    assert render(scene, size=64).shape == (64, 64, 3)
    assert len(np.unique(render(scene, supersample=1)[..., 0])) == 2


def test_render_batch_matches_render():
    scenes = train_scenes(4, seed=6)
    batch = render_batch(scenes, size=32)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    expected = torch.from_numpy(render(scenes[2])).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(batch[2], expected)


def test_image_grid_tiles_and_scales():
    images = [render(s) for s in train_scenes(3, seed=0)]
    grid = image_grid(images, cols=2, scale=2, pad=1)
    assert grid.shape == (2 * (2 * 33 + 1), 2 * (2 * 33 + 1), 3)
    assert np.array_equal(grid[2 : 2 + 64 : 2, 2 : 2 + 64 : 2], images[0])
