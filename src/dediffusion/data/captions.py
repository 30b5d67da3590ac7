"""Photos with captions, COCO style: which image files in a folder have which caption.

Two formats are read:
- COCO's own annotation files (`captions_train2014.json`, `captions_val2014.json`, `captions_val2017.json`...):
  `{"images": [{"id", "file_name", ...}], "annotations": [{"image_id", "caption", ...}]}`. COCO gives each
  image about five captions; the first one listed for an image is its caption here, so a run is the same
  on every machine;
- `captions.jsonl`: one JSON object per line with the image's `file_name` (or `path`), relative to the
  image folder, and its `caption` (or `text`).

`find_captions(folder)` looks for `captions.jsonl` in the folder, then for COCO's layout: an
`annotations/` folder beside the image folder holding `captions_<folder name>.json` (as the COCO
download unpacks: `val2014/` and `annotations/captions_val2014.json`). `captioned_images` pairs the
captions with the files that exist. Errors a user can cause raise `CaptionsError` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

JSONL_NAME = "captions.jsonl"


class CaptionsError(ValueError):
    """No captions for an image folder, or a captions file that cannot be read."""


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    caption: str


def find_captions(folder: str | os.PathLike) -> Path:
    """The captions file of an image folder: its `captions.jsonl`, or COCO's
    `../annotations/captions_<folder name>.json`. Raises CaptionsError saying where it looked."""
    folder = _image_folder(folder)
    candidates = [folder / JSONL_NAME, folder.parent / "annotations" / f"captions_{folder.resolve().name}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(f"'{c}'" for c in candidates)
    raise CaptionsError(
        f"no captions for the images in '{folder}': looked for {looked}. Put COCO's annotations folder beside "
        f'the images, write a {JSONL_NAME} there (one {{"file_name", "caption"}} per line), or pass --captions FILE'
    )


def read_captions(path: str | os.PathLike) -> dict[str, str]:
    """File name (relative to the image folder) -> caption, from a COCO annotation file or a JSONL file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaptionsError(f"cannot read captions file '{path}': {error}") from None
    captions = _read_jsonl(path, text) if path.suffix == ".jsonl" else _read_coco(path, text)
    if not captions:
        raise CaptionsError(f"captions file '{path}' holds no captions")
    return captions


def _read_coco(path: Path, text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
        names = {image["id"]: image["file_name"] for image in data["images"]}
        captions: dict[str, str] = {}
        for annotation in data["annotations"]:
            name = names[annotation["image_id"]]
            captions.setdefault(name, " ".join(annotation["caption"].split()))  # COCO's stray spaces, newlines
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CaptionsError(
            f"'{path}' is not a COCO captions file ({type(error).__name__}: {error}); it needs 'images' with "
            "'id' and 'file_name', and 'annotations' with 'image_id' and 'caption'"
        ) from None
    return captions


def _read_jsonl(path: Path, text: str) -> dict[str, str]:
    captions: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name = record.get("file_name", record.get("path"))
            caption = record.get("caption", record.get("text"))
        except (ValueError, AttributeError):
            name = caption = None
        if not isinstance(name, str) or not isinstance(caption, str):
            raise CaptionsError(
                f"'{path}' line {number}: expected a JSON object with 'file_name' (or 'path') and 'caption' "
                f"(or 'text'), got {line[:80]!r}"
            )
        captions.setdefault(name, " ".join(caption.split()))
    return captions


def captioned_images(folder: str | os.PathLike, captions_file: str | os.PathLike | None = None) -> list[CaptionedImage]:
    """The images in `folder` that have a caption, in file-name order, with their caption (from
    `captions_file`, default `find_captions(folder)`). Captions whose image is missing are skipped with a
    warning; raises CaptionsError when no image has one."""
    folder = _image_folder(folder)
    captions_file = Path(captions_file) if captions_file else find_captions(folder)
    captions = read_captions(captions_file)
    pairs = [CaptionedImage(folder / name, caption) for name, caption in sorted(captions.items())]
    found = [pair for pair in pairs if pair.path.is_file()]
    if not found:
        raise CaptionsError(
            f"none of the {len(pairs)} images named in '{captions_file}' is in '{folder}' (e.g. "
            f"'{pairs[0].path.name}'): point to the folder those file names are relative to"
        )
    if len(found) < len(pairs):
        logger.warning("%d of the %d images captioned in %s are not in %s; using the %d that are",
                       len(pairs) - len(found), len(pairs), captions_file, folder, len(found))  # fmt: skip
    return found


def _image_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptionsError(f"'{folder}' is not a folder: give the folder that holds the photos")
    return folder
