"""Reading a diffusers pipeline folder (or hub id) one component at a time.

`read_index(path)` reads `model_index.json` without importing diffusers; `LazyComponent` names one
component (its library and class from that index) and loads it when asked, so a decoder can start with
its tokenizer alone. Errors a user can cause raise `DecoderLoadError` naming the folder.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Sequence
from pathlib import Path


class DecoderLoadError(ValueError):
    """The decoder folder or hub id cannot be used."""


def has_component(index: dict, name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, (list, tuple)) and entry[0] is not None


def read_index(path: str) -> dict:
    """model_index.json of a local folder (read directly: no diffusers import), or of a hub id."""
    local = Path(path) / "model_index.json"
    try:
        if local.is_file():
            index = json.loads(local.read_text())
            if not isinstance(index, dict):
                raise ValueError("model_index.json does not hold a JSON object")
            return index
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.load_config(str(path))
    except (OSError, ValueError) as error:
        raise DecoderLoadError(
            f"cannot load decoder '{path}': it must be a diffusers pipeline folder with model_index.json "
            f"(or a hub id, which needs a network). Cause: {error}"
        ) from error


class LazyComponent:
    """One component of a pipeline folder (`name`, with its model_index.json entry), not loaded yet."""

    def __init__(self, path: str, name: str, entry: Sequence[str]):
        self.path, self.name, (self.library, self.class_name) = path, name, entry

    def load(self):
        cls = getattr(importlib.import_module(self.library), self.class_name)
        try:
            return cls.from_pretrained(str(self.path), subfolder=self.name)
        except Exception as error:  # OSError, ValueError, SafetensorError, KeyError from a foreign file...
            raise DecoderLoadError(
                f"cannot load the {self.name} of decoder '{self.path}' ({type(error).__name__}: {error}); "
                "the folder is damaged or incomplete: copy or download it again"
            ) from error

    @functools.cached_property
    def config(self) -> dict:
        """Its config.json in a local folder ({} if there is none), read once."""
        file = Path(self.path) / self.name / "config.json"
        try:
            return json.loads(file.read_text()) if file.is_file() else {}
        except ValueError as error:
            raise DecoderLoadError(
                f"'{file}' is not valid JSON ({error}); copy or download the decoder again"
            ) from None


def library_of(obj) -> str:
    return type(obj).__module__.split(".")[0]
