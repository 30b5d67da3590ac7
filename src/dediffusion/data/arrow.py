"""Hugging Face `datasets` data (a `save_to_disk` folder, .arrow or .parquet files) as an image source
with random access, read through pyarrow (`pip install "dediffusion[data]"`) without loading the set.

- Arrow files (what `Dataset.save_to_disk` writes, listed in the folder's `state.json`) are memory-mapped:
  reading row i touches only that row's bytes, so random access is cheap at any size.
- Parquet files are compressed in row groups, so reading row i reads (and keeps, for the rows that follow)
  its row group's image column. Sequential reading (`encode`) reads each group once; training draws
  rows in a random order and reads a whole group per image, so for training prefer small row groups or
  convert once with `datasets.load_dataset("parquet", ...).save_to_disk(...)`.

The image column is the first column the schema's `datasets` metadata calls an `Image()` feature, else
the first struct column with a `bytes` field (how `datasets` stores images), else the first binary
column named image, img, jpg, jpeg, png or webp (webdataset-style). A cell holds the encoded image bytes,
or only a `path` to an image file (absolute, or relative to the current folder or to the data file).
Rows are numbered file by file in the order given; row r of a file is named `FILE#r` in messages and
outputs. As with every source, batches are drawn by index (train/batches.py): deterministic and
resumable mid-epoch bitwise.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .images import MAX_IMAGE_PIXELS, DataSourceError, ImageLoadError, load_image, load_image_bytes

logger = logging.getLogger(__name__)

IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
_ROW_HINT = "Fix or drop that row (training skips it and lists it in bad_files.jsonl)."
_INSTALL = 'pip install pyarrow (or pip install "dediffusion[data]")'


class ArrowImages(torch.utils.data.Dataset):
    """The images in one column of a set of .arrow or .parquet files, as (3, size, size) tensors in [-1, 1].

    Args:
        files: the .arrow (Arrow IPC stream, as `datasets` writes them) or .parquet files, in order.
        size: the side images are resized and centre-cropped to.
        max_pixels: refuse larger images (see `open_rgb`).
    Raises:
        DataSourceError: pyarrow is missing, a file cannot be read, has no image column, or the set has no rows.
    """

    def __init__(self, files: Sequence[str | os.PathLike], size: int, max_pixels: int | None = MAX_IMAGE_PIXELS):
        self.files = [Path(f) for f in dict.fromkeys(files)]
        self.size, self.max_pixels = size, max_pixels
        _import_pyarrow(self.files[0])
        self._open = functools.lru_cache(maxsize=64)(self._open_file)  # mapped arrow files, parquet readers
        self._group = functools.lru_cache(maxsize=2)(self._read_group)  # decompressed parquet row groups
        layouts = [self._layout(k) for k in range(len(self.files))]
        self.columns = [column for column, _ in layouts]
        counts = [np.asarray(blocks, np.int64) for _, blocks in layouts]
        # row i of the set: file f, block b (an arrow record batch or a parquet row group), row r in it
        self.file_starts = np.cumsum([0] + [int(c.sum()) for c in counts])
        self.block_starts = [np.cumsum(np.concatenate([[0], c])) for c in counts]
        if len(self) == 0:
            raise DataSourceError(self.files[0], "the set has no rows", "Point to data that holds images")
        logger.info("%d images in %d %s files", len(self), len(self.files), self.files[0].suffix.lstrip("."))

    def __len__(self) -> int:
        return int(self.file_starts[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        data, path = self._cell(index)
        if data is not None:
            return load_image_bytes(data, self.name(index), self.size, self.max_pixels, _ROW_HINT)
        return load_image(path, self.size, self.max_pixels)

    def name(self, index: int) -> str:
        """`FILE#ROW`, the row counted within its file, e.g. `my-set/data-00000-of-00001.arrow#17`."""
        f = self._file_of(index)
        return f"{self.files[f]}#{index - self.file_starts[f]}"

    def open(self, index: int) -> BinaryIO:
        data, path = self._cell(index)
        return io.BytesIO(data) if data is not None else open(path, "rb")

    # ---- locating a row -----------------------------------------------------------------------

    def _file_of(self, index: int) -> int:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} is outside the set's {len(self)} rows")
        return int(np.searchsorted(self.file_starts, index, side="right")) - 1

    def _cell(self, index: int) -> tuple[bytes | None, Path | None]:
        """Row `index`'s image: (encoded bytes, None), or (None, the image file it names)."""
        f = self._file_of(index)
        row = index - int(self.file_starts[f])
        block = int(np.searchsorted(self.block_starts[f], row, side="right")) - 1
        value = self._column(f, block)[row - int(self.block_starts[f][block])].as_py()
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        else:
            data, path = value, None
        if data is None and not path:
            raise ImageLoadError(self.name(index), "the row has no image (empty cell)", _ROW_HINT)
        return data, None if data is not None else _resolve(path, self.files[f])

    def _column(self, f: int, block: int):
        if self.files[f].suffix == ".parquet":
            return self._group(f, block)
        return self._open(f)[1][block].column(self.columns[f])

    # ---- reading files ------------------------------------------------------------------------

    def _layout(self, f: int) -> tuple[str, list[int]]:
        """File f's image column and the number of rows in each of its blocks."""
        opened = self._open(f)
        if self.files[f].suffix == ".parquet":
            blocks = [opened.metadata.row_group(g).num_rows for g in range(opened.num_row_groups)]
            return image_column(opened.schema_arrow, self.files[f]), blocks
        schema, batches = opened
        return image_column(schema, self.files[f]), [batch.num_rows for batch in batches]

    def _open_file(self, f: int):
        """A parquet reader, or an arrow file's (schema, record batches), memory-mapped: nothing is copied."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.files[f]
        try:
            if path.suffix == ".parquet":
                return pq.ParquetFile(path)
            reader = pa.ipc.open_stream(pa.memory_map(str(path)))
            return reader.schema, list(reader)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as e:
            kind = "a parquet" if path.suffix == ".parquet" else "an arrow (IPC stream)"
            raise DataSourceError(path, f"it is not {kind} file ({e})", "Write it again or leave it out") from e

    def _read_group(self, f: int, group: int):
        return self._open(f).read_row_group(group, columns=[self.columns[f]]).column(0)


def image_column(schema, path: Path) -> str:
    """The name of the column of `schema` that holds the images (see the module docstring)."""
    import pyarrow as pa

    meta = json.loads((schema.metadata or {}).get(b"huggingface", b"{}") or "{}")
    features = meta.get("info", {}).get("features", {})
    for name, feature in features.items():
        if isinstance(feature, dict) and feature.get("_type") == "Image" and name in schema.names:
            return name
    for field in schema:
        if pa.types.is_struct(field.type) and field.type.get_field_index("bytes") >= 0:
            return field.name
    for field in schema:
        if (pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)) and (
            field.name.lower() in IMAGE_COLUMN_NAMES
        ):
            return field.name
    columns = ", ".join(f"{field.name}: {field.type}" for field in schema) or "none"
    raise DataSourceError(
        path,
        f"it has no image column (columns: {columns})",
        "Store the images as a datasets Image() feature, or as encoded bytes in a column named 'image'",
    )


def _resolve(path: str, data_file: Path) -> Path:
    """An image path stored in a cell: as given if it exists, else relative to the data file's folder."""
    given = Path(path)
    return given if given.is_absolute() or given.exists() else data_file.parent / given


def _import_pyarrow(path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise DataSourceError(path, "reading parquet and arrow files needs the pyarrow package", _INSTALL) from e
