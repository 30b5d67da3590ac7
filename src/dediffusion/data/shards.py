"""Webdataset tar shards as an image source with random access: an index of member offsets, not a stream.

A webdataset shard is a plain tar whose members are grouped into samples by key: a member's path up to
the first dot of its file name (`images/000123.jpg` and `images/000123.txt` are the fields `jpg` and
`txt` of the sample `images/000123`), consecutive members with one key forming one sample, as webdataset
reads them. A sample's image is its first field named like an image format (`jpg`, `png`, `webp`...:
`image_extensions()`); other fields (captions, JSON) are ignored, and samples without an image are
skipped and counted in a log line.

`ShardSet(shards, size)` reads each shard's tar headers once (never the image data) into an index of
(offset, length, member name) per sample, so `shard_set[i]` is one seek and one read, and training draws
its batches from the same seeded permutations as for an image folder (train/batches.py): deterministic,
the same for any number of processes, and resumable mid-epoch bitwise. A shard's index is cached in
`cache_dir()/shard-index/`, keyed by the shard's absolute path, size and modification time, so a shard
that changes is indexed again and an unchanged set opens at once.

A shard that cannot be used fails when the set is opened, with a DataSourceError naming it and saying
what to do: not a tar, compressed (random access needs a plain tar), truncated, a damaged header mid-file
(where `tarfile` would silently stop), or no image in it. A damaged image inside a good shard is an
ImageLoadError when it is read, named `SHARD#MEMBER`, which training skips and lists in bad_files.jsonl
like a bad file in a folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..cache import cache_dir
from .images import (
    MAX_IMAGE_PIXELS,
    DataSourceError,
    ImageLoadError,
    PathLike,
    image_extensions,
    load_image_bytes,
)

logger = logging.getLogger(__name__)

# webdataset's split of a member path into (key, field): the key runs to the first dot of the file name
_KEY_AND_FIELD = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_BLOCK = 512  # tar's unit: headers and member data start on 512-byte boundaries
_INDEX_VERSION = 1  # bump when the cached index format changes
_SHARD_HINT = "Write or download the shard again, or leave it out of the set"
_MEMBER_HINT = "Re-export the image and write the shard again, or leave it: training skips it."


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample's image lies in one shard."""

    offsets: np.ndarray  # (n,) int64: byte offset of the image data in the shard
    lengths: np.ndarray  # (n,) int64: its length in bytes
    names: np.ndarray  # (n,) bytes: the image member's name (UTF-8), for messages and outputs
    skipped: int  # samples without an image


class ShardSet(torch.utils.data.Dataset):
    """The images of a set of webdataset shards, in shard order then tar order, as (3, size, size) tensors
    in [-1, 1]. `shard_set[i]` raises ImageLoadError for a damaged image; use `load_batch` to skip such.

    Args:
        shards: the .tar files, in the order their samples are numbered.
        size: the side images are resized and centre-cropped to.
        max_pixels: refuse larger images (see `open_rgb`).
        cache: keep each shard's index in `cache_dir()/shard-index/` (False: index in memory only).
    Raises:
        DataSourceError: a shard is not a plain tar, is damaged, or holds no image.
    """

    def __init__(
        self, shards: Sequence[PathLike], size: int, max_pixels: int | None = MAX_IMAGE_PIXELS, cache: bool = True
    ):
        self.shards = [Path(s) for s in dict.fromkeys(shards)]
        self.size, self.max_pixels = size, max_pixels
        indices = [load_index(shard, cache) for shard in self.shards]
        self.shard_of = np.concatenate([np.full(len(x.offsets), k, np.int32) for k, x in enumerate(indices)])
        self.offsets = np.concatenate([x.offsets for x in indices])
        self.lengths = np.concatenate([x.lengths for x in indices])
        self.names = np.concatenate([x.names for x in indices])
        skipped = sum(x.skipped for x in indices)
        note = f" ({skipped} samples without an image skipped)" if skipped else ""
        logger.info("%d images in %d shards%s", len(self), len(self.shards), note)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_image_bytes(self.read(index), self.name(index), self.size, self.max_pixels, _MEMBER_HINT)

    def name(self, index: int) -> str:
        """`SHARD#MEMBER`, e.g. `shards/000003.tar#000123.jpg`."""
        return f"{self.shards[self.shard_of[index]]}#{self.names[index].decode()}"

    def open(self, index: int) -> BinaryIO:
        return io.BytesIO(self.read(index))

    def read(self, index: int) -> bytes:
        """The encoded image of sample `index`: one seek and one read in its shard."""
        offset, length = int(self.offsets[index]), int(self.lengths[index])
        try:
            with open(self.shards[self.shard_of[index]], "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        except OSError as e:
            raise ImageLoadError(self.name(index), f"cannot read its shard ({e})", "Check the shard.") from e
        if len(data) != length:
            reason = f"its shard ends before the image does (byte {offset + length})"
            hint = "The shard changed since it was indexed: open the set again."
            raise ImageLoadError(self.name(index), reason, hint)
        return data


# ---------------------------------------------------------------------------------------------
# Indexing


def load_index(shard: Path, cache: bool = True) -> ShardIndex:
    """The index of `shard`, from the cache when the shard is unchanged, else by scanning its headers."""
    if not shard.is_file():
        raise FileNotFoundError(f"shard '{shard}' does not exist. Check the spelling, pattern and directory.")
    cached = _cache_file(shard) if cache else None
    if cached is not None and cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as saved:
                return ShardIndex(saved["offsets"], saved["lengths"], saved["names"], int(saved["skipped"]))
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            logger.debug("rebuilding the index of %s (cached copy unreadable: %s)", shard, e)
    index = scan_shard(shard)
    if cached is not None:
        _save_index(cached, index)
    return index


def scan_shard(shard: Path) -> ShardIndex:
    """Index one shard from its tar headers (the member data is skipped, not read)."""
    _refuse_compressed(shard)
    entries, fields, skipped = [], set(), 0
    try:
        with tarfile.open(shard, "r:") as tar:
            for sample in _samples(tar):
                fields.update(field for field, _ in sample)
                image = next((m for field, m in sample if f".{field.lower()}" in image_extensions()), None)
                if image is None:
                    skipped += 1
                else:
                    entries.append((image.offset_data, image.size, image.name.encode()))
            members = tar.getmembers()
    except tarfile.ReadError as e:
        raise _unreadable(shard, e) from e
    _check_tar_end(shard, members[-1].offset_data + -(-members[-1].size // _BLOCK) * _BLOCK if members else 0)
    if not entries:
        raise _no_images(shard, skipped, fields)
    offsets, lengths, names = zip(*entries)
    return ShardIndex(np.array(offsets, np.int64), np.array(lengths, np.int64), np.array(names, bytes), skipped)


def _samples(tar: tarfile.TarFile) -> Iterator[list[tuple[str, tarfile.TarInfo]]]:
    """The samples of a shard in tar order, each a list of (field, member): consecutive regular files with
    one key, grouped as webdataset groups them (files without a dot in their name belong to no sample)."""
    key, sample = None, []
    for member in tar:
        split = _KEY_AND_FIELD.match(member.name) if member.isfile() else None
        if split is None:
            continue
        if split[1] != key and sample:
            yield sample
            sample = []
        key = split[1]
        sample.append((split[2], member))
    if sample:
        yield sample


def _refuse_compressed(shard: Path) -> None:
    with open(shard, "rb") as handle:
        start = handle.read(6)
    for magic, name in _COMPRESSED.items():
        if start.startswith(magic):
            raise DataSourceError(
                shard,
                f"it is {name}-compressed, and reading samples by index needs a plain tar",
                "Decompress the shards (e.g. gunzip; webdataset reads plain .tar shards as well)",
            )


def _unreadable(shard: Path, error: tarfile.ReadError) -> DataSourceError:
    if "unexpected end" in str(error):
        reason = "it ends in the middle of a member (truncated)"
    else:
        reason = "it is empty (0 bytes)" if "empty file" in str(error) else f"it is not a tar file ({error})"
    return DataSourceError(shard, reason, _SHARD_HINT)


def _check_tar_end(shard: Path, end: int) -> None:
    """What follows the last member must be tar's end-of-archive marker: zero blocks. `tarfile` ends its
    listing without a word at a damaged header or at a file cut short between members, which would drop
    the rest of the shard unnoticed; here both are errors."""
    size, where = shard.stat().st_size, None
    with open(shard, "rb") as handle:
        handle.seek(end)
        position = end
        while where is None and (chunk := handle.read(1 << 20)):
            if chunk.strip(b"\0"):
                where = position + len(chunk) - len(chunk.lstrip(b"\0"))
            position += len(chunk)
    if where is not None and size - where >= _BLOCK:
        reason = f"it has a damaged tar header at byte {where} (the members after it are lost)"
        raise DataSourceError(shard, reason, _SHARD_HINT)
    if where is not None or size - end < _BLOCK:
        reason = f"it ends at byte {size}, without tar's end-of-archive marker (truncated)"
        raise DataSourceError(shard, reason, _SHARD_HINT)


def _no_images(shard: Path, samples: int, fields: set[str]) -> DataSourceError:
    found = "no samples"
    if samples:
        found = f"{samples} sample{'s' * (samples != 1)}, with the fields {', '.join(sorted(fields))}"
    return DataSourceError(
        shard,
        f"it holds no images ({found})",
        "Each sample needs an image member named KEY.jpg, KEY.png, KEY.webp or another image format; "
        "leave this shard out of the set",
    )


# ---------------------------------------------------------------------------------------------
# The cache


def _cache_file(shard: Path) -> Path:
    stat = shard.stat()
    key = f"{_INDEX_VERSION}\0{shard.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return cache_dir() / "shard-index" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def _save_index(path: Path, index: ShardIndex) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, offsets=index.offsets, lengths=index.lengths, names=index.names, skipped=index.skipped)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as e:  # a read-only cache costs time, not correctness
        logger.debug("cannot cache the shard index at %s: %s", path, e)
