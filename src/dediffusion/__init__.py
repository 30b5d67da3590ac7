"""dediffusion: turn images into text through a frozen text-to-image diffusion decoder.

Public API (imported lazily, so `import dediffusion` stays light):
    DeDiffusion, TextToImageDecoder, Config, load_config, train, load_image, find_images
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DeDiffusion": "dediffusion.models.dediffusion",
    "CheckpointMismatchError": "dediffusion.models.dediffusion",
    "TextToImageDecoder": "dediffusion.models.decoder",
    "build_micro_decoder": "dediffusion.models.micro",
    "Config": "dediffusion.config",
    "load_config": "dediffusion.config",
    "train": "dediffusion.train.loop",
    "load_image": "dediffusion.data.images",
    "find_images": "dediffusion.data.images",
    "ImageLoadError": "dediffusion.data.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dediffusion' has no attribute {name!r}")
