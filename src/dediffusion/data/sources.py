"""What `--data` / `train.data` and `encode`'s paths name, opened as one `ImageSource` (random access).

One spelling in the CLI, the config and the API (`open_source`). The kind of data is told by what the
paths hold:

- **image folder**: image files, and folders searched recursively for them (a Hugging Face `imagefolder`
  is one: its metadata files are ignored) -> `ImageFolder`;
- **webdataset shards**: `.tar` files, a folder of them, or a pattern: braces in webdataset's notation,
  `'shards/{000000..000099}.tar'` (quote it, so the shell leaves it to dediffusion), or a glob,
  `'shards/*.tar'` -> `ShardSet`;
- **parquet**: `.parquet` files, a folder or pattern of them (a hub dataset's `data/train-*.parquet`)
  -> `ArrowImages`;
- **datasets folder**: a folder written by `Dataset.save_to_disk` (it holds `state.json`; for a
  `DatasetDict`, name one split's folder), or `.arrow` files -> `ArrowImages`.

A folder holding any image is an image folder; one holding no images is read as the shards, else the
parquet files, else the arrow files it holds. One source holds one kind of data. Each kind is read by
index, never streamed, so every one trains deterministically and resumes mid-epoch bitwise.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from .images import (
    MAX_IMAGE_PIXELS,
    DataSourceError,
    ImageFolder,
    ImageSource,
    NoImagesError,
    _check_size,
    image_extensions,
)

KINDS = {"images": "images", "webdataset": "webdataset shards", "parquet": "parquet files", "arrow": "arrow files"}
_SUFFIX_KINDS = {".tar": "webdataset", ".parquet": "parquet", ".arrow": "arrow"}
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
_BRACES = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://|pipe:)")


def open_source(
    paths: str | os.PathLike | Sequence[str | os.PathLike], size: int, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> ImageSource:
    """Open the images `paths` name (see the module docstring for the kinds) as a random-access source.

    Args:
        paths: one path or pattern, or several of one kind.
        size: the side images come out at, (3, size, size) in [-1, 1].
        max_pixels: refuse larger images (see `open_rgb`).
    Raises:
        FileNotFoundError: a path does not exist, or a pattern matches nothing.
        NoImagesError: nothing readable was found.
        DataSourceError: the paths mix kinds, name a URL, or a shard or data file is unusable.
    """
    _check_size(size)
    kind, files = resolve_source(paths)
    if kind == "images":
        return ImageFolder(files, size, max_pixels)
    if kind == "webdataset":
        from .shards import ShardSet

        return ShardSet(files, size, max_pixels)
    from .arrow import ArrowImages

    return ArrowImages(files, size, max_pixels)


def resolve_source(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[str, list[Path]]:
    """The kind of data `paths` name (a key of `KINDS`) and its paths: for an image folder the files and
    folders as given, for the others every data file, in order."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[tuple[Path, str, list[Path]]] = []
    for pattern in map(str, paths):
        found += [(path, *classify(path)) for path in expand(pattern)]
    first_of: dict[str, Path] = {}  # each kind found, with the first path that holds it
    for path, kind, _ in found:
        first_of.setdefault(kind, path)
    if len(first_of) > 1:
        (kind, path), (other, other_path) = list(first_of.items())[:2]
        reason = f"it holds {KINDS[other]}, but '{path}' holds {KINDS[kind]}"
        raise DataSourceError(other_path, reason, "Pass one kind of data at a time")
    return next(iter(first_of)), list(dict.fromkeys(file for _, _, files in found for file in files))


def classify(path: Path) -> tuple[str, list[Path]]:
    """The kind of data one existing path holds, and its data files (for images: the path itself)."""
    if not path.exists():
        raise FileNotFoundError(f"data path '{path}' does not exist. Check the spelling and directory.")
    name = path.name.lower()
    if name.endswith(_COMPRESSED_TAR):
        raise DataSourceError(path, "compressed shards cannot be read by index", "Decompress them to plain .tar files")
    if path.is_file():
        kind = _SUFFIX_KINDS.get(path.suffix.lower(), "images")  # any other file is taken as an image
        return kind, [path]
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        reason = f"it is a DatasetDict with the splits {', '.join(splits)}"
        raise DataSourceError(path, reason, f"Name one split's folder, e.g. {path / (splits or ['train'])[0]}")
    if (path / "state.json").is_file():
        return "arrow", _saved_dataset_files(path)
    return _folder_kind(path)


def _saved_dataset_files(folder: Path) -> list[Path]:
    """The arrow files of a `save_to_disk` folder, in the order its `state.json` lists them."""
    try:
        return [folder / entry["filename"] for entry in json.loads((folder / "state.json").read_text())["_data_files"]]
    except (ValueError, KeyError, TypeError) as e:
        hint = "Save it again with Dataset.save_to_disk"
        raise DataSourceError(folder / "state.json", f"it does not list the data files ({e})", hint) from e


def _folder_kind(folder: Path) -> tuple[str, list[Path]]:
    """An image folder if it holds any image (found without listing it all), else its shards, parquet or
    arrow files (sorted, searched recursively, hidden ones skipped)."""
    by_kind: dict[str, list[Path]] = {kind: [] for kind in _SUFFIX_KINDS.values()}
    compressed = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in (f for f in files if not f.startswith(".")):
            suffix = Path(file).suffix.lower()
            if suffix in image_extensions():
                return "images", [folder]
            if suffix in _SUFFIX_KINDS:
                by_kind[_SUFFIX_KINDS[suffix]].append(Path(root, file))
            compressed += [Path(root, file)] if file.lower().endswith(_COMPRESSED_TAR) else []
    for kind, files in by_kind.items():
        if files:
            return kind, sorted(files, key=lambda p: p.relative_to(folder).as_posix())
    if compressed:
        classify(compressed[0])  # raises: compressed shards cannot be read by index
    raise NoImagesError([folder], sources=True)


# ---------------------------------------------------------------------------------------------
# Patterns


def expand(pattern: str) -> list[Path]:
    """The paths a pattern names: braces first (`{000..099}`, `{a,b}`), then glob characters (`*?[`),
    matches sorted. A path that exists as written is taken literally.

    Raises:
        DataSourceError: the pattern is a URL (dediffusion reads local files).
        FileNotFoundError: a glob matches nothing.
    """
    if _URL.match(pattern):
        reason = "it is a URL, and dediffusion reads local files by index"
        raise DataSourceError(pattern, reason, "Download the data, then pass its folder")
    if os.path.exists(pattern):
        return [Path(pattern)]
    paths = []
    for expanded in expand_braces(pattern):
        if not glob.has_magic(expanded):
            paths.append(Path(expanded))
            continue
        matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            raise FileNotFoundError(f"no files match '{expanded}'. Check the pattern and directory.")
        paths += map(Path, matches)
    return paths


def expand_braces(pattern: str) -> list[str]:
    """Brace expansion as in the shell and webdataset: `a{1..3}b` -> a1b a2b a3b (zero-padded like the
    bounds: `{000..002}` -> 000 001 002), `a{x,y}` -> ax ay; braces holding neither stay as written."""
    for match in _BRACES.finditer(pattern):
        choices = _brace_choices(match[1])
        if choices is not None:
            head, tail = pattern[: match.start()], pattern[match.end() :]
            return [path for choice in choices for path in expand_braces(head + choice + tail)]
    return [pattern]


def _brace_choices(body: str) -> list[str] | None:
    bounds = _RANGE.match(body)
    if bounds:
        first, last = int(bounds[1]), int(bounds[2])
        padded = any(len(b.lstrip("-")) > 1 and b.lstrip("-").startswith("0") for b in bounds.groups())
        width = max(len(b) for b in bounds.groups()) if padded else 0
        step = 1 if last >= first else -1
        return [f"{n:0{width}d}" for n in range(first, last + step, step)]
    return body.split(",") if "," in body else None
