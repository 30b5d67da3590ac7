"""FID through a maintained implementation: torchmetrics' `FrechetInceptionDistance`.

The distance is torchmetrics' (running feature sums in float64, the Frechet distance between the two
Gaussians); the feature network is any module that maps uint8 images (B, 3, H, W) to features (B, D).
`inception_v3()` gives the standard one, the FID Inception (TensorFlow's 2015-12-05 weights, 2048-d
pool features, images resized to 299 inside), as torchmetrics builds it through torch-fidelity. Tests
inject a tiny random network instead; everything else runs the same code.

What needs what: `torchmetrics` (the `coco` extra; its core alone, without torchvision) computes the
distance for any feature network. The Inception network comes from `torch-fidelity`, which imports
torchvision (also in the `coco` extra); its weights are downloaded once into the torch hub cache
(`torch.hub.get_dir()/checkpoints`). Each missing piece raises `FIDUnavailableError`, one line saying
what to install or where to put the weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name in the hub cache
INCEPTION_NAME = "FID Inception v3 (pool3, 2048-d; torchmetrics + torch-fidelity)"


class FIDUnavailableError(RuntimeError):
    """FID cannot be computed here: a package or the Inception weights are missing."""


def frechet_inception_distance(features: nn.Module):
    """torchmetrics' `FrechetInceptionDistance` over `features` (uint8 images in, (B, D) out), keeping the
    real images' statistics across `reset()` so that several image sets compare with one real set."""
    return _fid_module().FrechetInceptionDistance(feature=features, reset_real_features=False, normalize=False)


def inception_v3(device: str | torch.device = "cpu") -> nn.Module:
    """The FID Inception network (uint8 (B, 3, H, W) -> (B, 2048)) on `device`, in eval mode.

    Raises FIDUnavailableError when torch-fidelity is not installed, or when its weights are neither in
    the torch hub cache nor downloadable (no network)."""
    fid = _fid_module()
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        network = fid.NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except ModuleNotFoundError as error:
        raise FIDUnavailableError(f"FID's Inception network needs torch-fidelity ({error}); {_INSTALL}") from None
    except (OSError, RuntimeError) as error:  # URLError is an OSError: no network, or a damaged file
        raise FIDUnavailableError(
            f"the FID Inception weights ({INCEPTION_WEIGHTS}) are not in {cache} and cannot be downloaded "
            f"({type(error).__name__}: {error}): run once with a network, or set TORCH_HOME to a folder whose "
            f"hub/checkpoints/ holds {INCEPTION_WEIGHTS}"
        ) from None
    return network.to(device).eval()


def describe(features: nn.Module) -> str:
    """How a report names a feature network: the FID Inception's full name, else the module's class."""
    return INCEPTION_NAME if type(features).__name__ == "NoTrainInceptionV3" else type(features).__name__


def _fid_module():
    try:
        import torchmetrics.image.fid as fid
    except (ImportError, RuntimeError) as error:
        if (getattr(error, "name", None) or "").startswith("torchmetrics"):
            raise FIDUnavailableError(f"FID needs torchmetrics: {_INSTALL}") from None
        # torch-fidelity imports torchvision, which fails to import when it was built for another torch
        raise FIDUnavailableError(f"torchmetrics' FID cannot be imported ({error}); {_INSTALL}") from None
    return fid


_INSTALL = (
    "pip install 'dediffusion[coco]' (torchmetrics and torch-fidelity, which brings torchvision: install "
    "the torchvision build that matches your torch first)"
)
