"""What every benchmark records beside its numbers: the machine it ran on."""

from __future__ import annotations

import platform

import torch


def machine() -> dict:
    return {
        "processor": platform.processor() or platform.machine(),
        "uname": " ".join(platform.uname()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
