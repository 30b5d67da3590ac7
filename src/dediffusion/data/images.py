"""Image files in, image tensors out: the one place that defines image value ranges.

Contract: an image tensor is float32, shaped (3, H, W) or (B, 3, H, W), with values in [-1, 1]
(pixel value v in 0..255 maps to v / 127.5 - 1). Every other module converts through `to_tensor`
and `to_pil` instead of doing its own arithmetic.

Loading is strict: whatever is wrong with a file (missing, empty, a directory, unreadable, not an
image, truncated, too large) becomes an `ImageLoadError` naming the file, the reason and what to
do; no raw PIL or OS error escapes `open_rgb`. Any colour mode PIL opens (grayscale, palette,
CMYK, 16-bit, float, with or without alpha) comes out as 8-bit RGB, upright per its EXIF
orientation, with transparency composited over white.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")  # named in messages
# Pillow registers these but cannot decode them without outside programs or handlers
_UNDECODABLE = frozenset({".bufr", ".grib", ".h5", ".hdf", ".emf", ".wmf", ".eps", ".ps", ".mpeg", ".mpg"})
MAX_IMAGE_PIXELS = 89_478_485  # PIL's default decompression-bomb limit
PathLike = str | os.PathLike

_FIX_HINT = "Re-export the image or remove it from the folder."
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageLoadError(ValueError):
    """A file could not be loaded as an image; `.path` names it, `.reason` says why."""

    def __init__(self, path: PathLike, reason: str, hint: str = _FIX_HINT):
        super().__init__(f"cannot read image '{path}': {reason}. {hint}")
        self.path, self.reason, self.hint = Path(path), reason, hint

    def __reduce__(self):  # keeps the error picklable across DataLoader workers
        return type(self), (self.path, self.reason, self.hint)


class NoImagesError(ValueError):
    """No image files were found under the given paths; `.paths` names them. `sources`: the search also
    looked for the other kinds of data `open_source` reads (shards, parquet and arrow files)."""

    def __init__(self, paths: Sequence[PathLike], sources: bool = False):
        names = ", ".join(f"'{p}'" for p in paths)
        others = ", and for webdataset shards (.tar), .parquet and .arrow files" if sources else ""
        super().__init__(
            f"no images found in {names} (searched recursively for {' '.join(IMAGE_EXTENSIONS)} and the other "
            f"formats Pillow reads{others}; hidden files and folders are skipped). Add images there or point to "
            "another folder."
        )
        self.paths, self.sources = [Path(p) for p in paths], sources

    def __reduce__(self):
        return type(self), (self.paths, self.sources)


class DataSourceError(ValueError):
    """A data source as a whole cannot be read (a damaged or compressed shard, a shard without images, a
    parquet file without an image column, an empty set); `.path` names the file or pattern, `.reason` says
    why and `.hint` what to do."""

    def __init__(self, path: PathLike, reason: str, hint: str):
        super().__init__(f"cannot read '{path}': {reason}. {hint}.")
        self.path, self.reason, self.hint = str(path), reason, hint

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.hint)


# ---------------------------------------------------------------------------------------------
# Finding files


def find_images(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """List the image files named by `paths`.

    Args:
        paths: one path or a list of paths. A folder is searched recursively for files whose
            suffix (any case) names a format Pillow reads (`image_extensions()`), skipping
            hidden files and folders, in sorted order. A file is kept as given whatever its
            suffix, so a bad file the user named gets a clear `ImageLoadError` when loaded instead of vanishing.
    Returns:
        The files, in argument order, duplicates removed.
    Raises:
        FileNotFoundError: a path does not exist.
        NoImagesError: nothing was found.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"image path '{path}' does not exist. Check the spelling and directory.")
        found += _search_folder(path) if path.is_dir() else [path]
    if not found:
        raise NoImagesError(paths)
    return list(dict.fromkeys(found))


def _search_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune: never descend into .git etc.
        found += [Path(root, f) for f in files if _is_image_name(f)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in image_extensions()


@functools.cache
def image_extensions() -> frozenset[str]:
    """The file suffixes (lower case, with the dot) of every image format Pillow can open and decode."""
    readable = {ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    return frozenset(readable - _UNDECODABLE) | frozenset(IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------------------------
# Opening files


def open_rgb(path: PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image file as upright 8-bit RGB.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this, judged from the header before any
            decoding (a guard against decompression bombs); None turns this check off. PIL's own
            hard limit, 2 * PIL.Image.MAX_IMAGE_PIXELS, still applies.
    Returns:
        A loaded PIL image in mode "RGB".
    Raises:
        ImageLoadError: the file is missing, empty, a directory, unreadable, not an image,
            truncated or corrupt, too large, or in a colour mode that cannot be converted.
    """
    path = Path(path)
    with _pil_errors_as_load_errors(path):
        _check_file(path)
        return _decode(path, path, max_pixels)


def decode_rgb(data: bytes, name: str, max_pixels: int | None = MAX_IMAGE_PIXELS, hint: str = _FIX_HINT) -> Image.Image:
    """`open_rgb` for an encoded image held in memory (a shard member, a parquet cell): as strict, with
    `name` (where the bytes came from) and `hint` (what to do) in its ImageLoadErrors."""
    with _pil_errors_as_load_errors(name, hint):
        if not data:
            raise ImageLoadError(name, "it is empty (0 bytes)", hint)
        return _decode(name, io.BytesIO(data), max_pixels)


def _decode(name: PathLike, source, max_pixels: int | None) -> Image.Image:
    with Image.open(source) as image:
        _check_pixels(name, image, max_pixels)
        with _strict_truncation():
            image.load()
        return _to_rgb8(_exif_upright(name, image))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageLoadError(path, "file does not exist", "Check the path, or rescan the folder.")
    if path.is_dir():
        raise ImageLoadError(path, "it is a directory, not an image file", "Rename or remove it.")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "file is empty (0 bytes)", _FIX_HINT)


@contextlib.contextmanager
def _pil_errors_as_load_errors(path: PathLike, hint: str = _FIX_HINT) -> Iterator[None]:
    """Translate whatever PIL or the OS raises while decoding into an ImageLoadError (`hint`: what to do
    about a damaged image)."""
    with warnings.catch_warnings():
        # Size is checked by _check_pixels against max_pixels; PIL's softer warning is redundant.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageLoadError(path, f"image is too large ({e})", _too_large_hint()) from e
        except PermissionError as e:
            raise ImageLoadError(path, "permission denied", "Check the file's permissions.") from e
        except UnidentifiedImageError as e:
            raise ImageLoadError(path, "not a recognised image format", hint) from e
        except OSError as e:
            raise ImageLoadError(path, f"file is truncated or corrupt ({e})", hint) from e
        except Exception as e:  # decoders for untrusted files raise anything: SyntaxError, struct.error...
            raise ImageLoadError(path, f"cannot decode image ({type(e).__name__}: {e})", hint) from e


def _too_large_hint() -> str:
    return (
        "This guards against decompression bombs; if you trust the file, downscale it, or raise the limit "
        "(command line: --max-pixels; Python: max_pixels=, and beyond 2 * PIL.Image.MAX_IMAGE_PIXELS that too)."
    )


def _check_pixels(path: PathLike, image: Image.Image, max_pixels: int | None) -> None:
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        reason = f"image is too large ({width}x{height} = {width * height} pixels > max_pixels={max_pixels})"
        raise ImageLoadError(path, reason, _too_large_hint())


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated files even if another library set LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = True


def _exif_upright(path: PathLike, image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as e:  # broken EXIF is common in photos; the pixels are still fine
        logger.warning("ignoring unreadable EXIF orientation in '%s': %s", path, e)
        return image


# ---------------------------------------------------------------------------------------------
# Colour modes


def _to_rgb8(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _to_l8(image)  # PIL's own convert() clips these to 255 instead of scaling
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _over_white(image.convert("RGBA"))
    return image.convert("RGB")


def _to_l8(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float grayscale image to 8 bits."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if image.mode == "F":  # floats are 0..1 or 0..255 by convention
        scale = 255 if 0 <= low and high <= 1 else 1 if 0 <= low and high <= 255 else None
    else:  # PIL holds 16-bit data (PNG, TIFF, PGM) as I;16* or I: 65535 -> 255
        scale = 1 / 257 if 0 <= low and high <= 65535 else None
    if scale is None:
        logger.info("stretching %s image with values in [%g, %g] to 0..255", image.mode, low, high)
        values, scale = values - low, 255 / max(high - low, 1e-12)
    values = values * scale
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), mode="L")


def _over_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image).convert("RGB")


# ---------------------------------------------------------------------------------------------
# Tensors and transforms


def to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert an RGB PIL image to a float32 tensor (3, H, W) in [-1, 1].

    Raises:
        ValueError: the image is not in mode "RGB" (use `open_rgb` to get one).
    """
    if image.mode != "RGB":
        raise ValueError(f"to_tensor expects an RGB image, got mode {image.mode!r}; load it with open_rgb.")
    return from_pixels(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1))


def from_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> float32 in [-1, 1]."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def to_pixels(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor in [-1, 1] (..., 3, H, W) -> uint8 pixels on the CPU, clamping values outside the range."""
    return ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_pil(tensor: torch.Tensor) -> Image.Image | list[Image.Image]:
    """Convert a tensor in [-1, 1] back to RGB image(s), clamping values outside the range.

    Args:
        tensor: (3, H, W) or (B, 3, H, W).
    Returns:
        One image for (3, H, W), a list of B images for (B, 3, H, W).
    Raises:
        ValueError: the tensor has another shape.
    """
    if tensor.ndim == 4 and tensor.shape[1] == 3:
        return [_tensor_to_pil(t) for t in tensor]
    if tensor.ndim == 3 and tensor.shape[0] == 3:
        return _tensor_to_pil(tensor)
    raise ValueError(f"to_pil expects a tensor shaped (3, H, W) or (B, 3, H, W), got {tuple(tensor.shape)}.")


def _tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_pixels(tensor).permute(1, 2, 0).numpy(), mode="RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic, antialiased), then crop the centre size x size."""
    _check_size(size)
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image size must be a positive integer, got {size!r}.")


def load_image(path: PathLike, size: int, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """Load an image file as a (3, size, size) tensor in [-1, 1]; raises ImageLoadError."""
    return to_tensor(resize_center_crop(open_rgb(path, max_pixels), size))


def load_image_bytes(data: bytes, name: str, size: int, max_pixels: int | None = MAX_IMAGE_PIXELS,
                     hint: str = _FIX_HINT) -> torch.Tensor:  # fmt: skip
    """`load_image` for an encoded image held in memory (see `decode_rgb`); raises ImageLoadError."""
    return to_tensor(resize_center_crop(decode_rgb(data, name, max_pixels, hint), size))


# ---------------------------------------------------------------------------------------------
# Datasets


class ImageSource(Protocol):
    """What training and `encode` read: images by index, each a (3, size, size) tensor in [-1, 1].

    Random access (not a stream) is what makes a run deterministic and resumable: a step's batch is
    `source[i]` for indices that are pure functions of (seed, step) (see train/batches.py), whatever the
    source's kind. `ImageFolder` here, `ShardSet` (webdataset tar shards) and `ArrowImages` (parquet,
    `datasets` folders) implement it; `open_source` (data/sources.py) picks one from a path.
    """

    size: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...  # raises ImageLoadError for a bad image

    def name(self, index: int) -> str: ...  # where image `index` lives, as messages and outputs name it

    def open(self, index: int) -> BinaryIO: ...  # its encoded bytes, undecoded (header peeks)


class ImageFolder(torch.utils.data.Dataset):
    """The images under one or more files/folders, as (3, size, size) tensors in [-1, 1].

    `dataset[i]` raises ImageLoadError for a bad file; use `load_batch` to skip such files.
    """

    def __init__(self, paths: PathLike | Sequence[PathLike], size: int, max_pixels: int | None = MAX_IMAGE_PIXELS):
        _check_size(size)
        self.paths = find_images(paths)
        self.size, self.max_pixels = size, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image(self.paths[index], self.size, self.max_pixels)

    def name(self, index: int) -> str:
        return str(self.paths[index])

    def open(self, index: int) -> BinaryIO:
        return open(self.paths[index], "rb")


def load_batch(dataset: ImageSource, indices: Sequence[int]) -> tuple[torch.Tensor, list[int], list[ImageLoadError]]:
    """Load `dataset[i]` for each index, skipping files that fail.

    Returns:
        images: (B', 3, size, size) for the B' images that loaded, (0, 3, size, size) if none did.
        loaded: the positions k (into `indices`) whose image loaded, in order.
        errors: one ImageLoadError per skipped file, for the caller to report.
    """
    images, loaded, errors = [], [], []
    for position, index in enumerate(indices):
        try:
            images.append(dataset[index])
            loaded.append(position)
        except ImageLoadError as e:
            errors.append(e)
    if not images:
        return torch.empty(0, 3, dataset.size, dataset.size), loaded, errors
    return torch.stack(images), loaded, errors
