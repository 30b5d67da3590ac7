"""Rasterise scenes with numpy: anti-aliased shapes on a flat background.

``render(scene, size)`` returns ``uint8`` pixels ``(size, size, 3)``; ``render_batch`` returns the
model-ready tensor ``(B, 3, size, size)`` in [-1, 1] made from those same ``uint8`` pixels, so that
training on rendered scenes equals training on the PNG files that ``write_samples`` writes.

Anti-aliasing: each object's coverage of a pixel is the fraction of ``supersample**2`` sub-pixel
sample points inside the shape (a box filter over a grid rendered ``supersample`` times finer), and
the object's colour is blended over the image by that coverage. Only the object's bounding box is
rasterised, which keeps a 32x32 scene at tens of microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dediffusion.world.scene import BACKGROUNDS, COLORS, GRID, Object, Scene

# Half-extent of each size, as a fraction of a grid cell (before the object's own ``scale``).
SIZE_EXTENTS: dict[str, float] = {"small": 0.32, "large": 0.47}
# How far each shape reaches beyond its half-extent (bounding box = extent * reach).
_REACH = {"circle": 1.0, "square": 0.9, "triangle": 1.05, "diamond": 1.15, "cross": 1.0}
_CROSS_ARM = 0.32  # half-width of the cross's arms, fraction of the half-extent


def render(scene: Scene, size: int = 32, supersample: int = 4) -> np.ndarray:
    """Render ``scene`` to ``uint8`` RGB pixels.

    Args:
        scene: the scene to draw.
        size: image height and width in pixels.
        supersample: sub-pixel samples per pixel side used for anti-aliasing.
    Returns:
        array ``(size, size, 3)``, dtype ``uint8``.
    Raises:
        ValueError: if ``size`` or ``supersample`` is below 1.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be >= 1, got {size} and {supersample}")
    base = _shaded(BACKGROUNDS[scene.background], scene.background_shade)
    image = np.empty((size, size, 3), np.float32)
    image[:] = base
    for obj in scene.objects:
        _draw(image, obj, supersample)
    return np.round(image).astype(np.uint8)


def render_batch(scenes: Sequence[Scene], size: int = 32, supersample: int = 4) -> torch.Tensor:
    """Render scenes into a float32 tensor ``(B, 3, size, size)`` in [-1, 1]."""
    pixels = np.stack([render(scene, size, supersample) for scene in scenes])  # (B, H, W, 3)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()
    return images / 127.5 - 1.0


def image_grid(images: Sequence[np.ndarray], cols: int = 8, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Tile ``uint8`` images ``(H, W, 3)`` into one grid image, upscaled by pixel repetition."""
    height, width = images[0].shape[:2]
    rows = -(-len(images) // cols)
    grid = np.full((rows * (height + pad) + pad, cols * (width + pad) + pad, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = img
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def object_geometry(obj: Object, size: int) -> tuple[float, float, float]:
    """Centre ``(x, y)`` and half-extent of ``obj`` in pixel units of a ``size`` image."""
    cell = size / GRID
    cx = (obj.col + 0.5 + obj.dx) * cell
    cy = (obj.row + 0.5 + obj.dy) * cell
    return cx, cy, SIZE_EXTENTS[obj.size] * obj.scale * cell


def object_coverage(obj: Object, size: int, supersample: int = 4) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of ``obj`` in a ``size`` image, over its clipped bounding box.

    Returns:
        ``(top, left, coverage)`` with ``coverage`` a float32 array ``(h, w)`` in [0, 1]; ``h`` or
        ``w`` is 0 when the box lies outside the image.
    """
    cx, cy, extent = object_geometry(obj, size)
    reach = extent * _REACH[obj.shape]
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)), size)
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)), size)
    if x0 >= x1 or y0 >= y1:
        return y0, x0, np.zeros((0, 0), np.float32)
    offsets = (np.arange(supersample, dtype=np.float32) + 0.5) / supersample
    xs = ((np.arange(x0, x1, dtype=np.float32)[:, None] + offsets).ravel() - cx) / extent
    ys = ((np.arange(y0, y1, dtype=np.float32)[:, None] + offsets).ravel() - cy) / extent
    inside = _inside(obj.shape, xs[None, :], ys[:, None])  # (h * supersample, w * supersample)
    coverage = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3), dtype=np.float32)
    return y0, x0, coverage


def _draw(image: np.ndarray, obj: Object, supersample: int) -> None:
    top, left, coverage = object_coverage(obj, image.shape[0], supersample)
    height, width = coverage.shape
    color = np.asarray(_shaded(COLORS[obj.color], obj.shade), np.float32)
    patch = image[top : top + height, left : left + width]  # a view: blending writes into image
    patch += coverage[:, :, None] * (color - patch)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership in the unit shape centred at the origin; ``u`` right, ``v`` down."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.9
    if shape == "diamond":
        return au + av <= 1.15
    if shape == "triangle":  # apex up at v = -1, flat base at v = 0.9, base half-width 1.05
        return (v <= 0.9) & (au <= (v + 1.0) * (1.05 / 1.9))
    if shape == "cross":
        return ((au <= 1.0) & (av <= _CROSS_ARM)) | ((av <= 1.0) & (au <= _CROSS_ARM))
    raise ValueError(f"unknown shape {shape!r}")


def _shaded(rgb: tuple[int, int, int], shade: float) -> tuple[float, float, float]:
    """Lighten towards white (shade > 0) or darken towards black (shade < 0)."""
    target = 255.0 if shade > 0 else 0.0
    return tuple(c + abs(shade) * (target - c) for c in rgb)
