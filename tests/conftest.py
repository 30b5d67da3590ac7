"""Test setup: CPU only, fixed seeds, no network; micro decoders built from configs."""

from __future__ import annotations

import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402

from quadrants import WORDS  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def micro(latent: bool = False, prediction_type: str = "epsilon"):
    from dediffusion.models.micro import build_micro_decoder

    torch.manual_seed(0)
    return build_micro_decoder(
        WORDS,
        resolution=16 if latent else 8,
        latent=latent,
        prediction_type=prediction_type,
        max_length=8,
        unet_channels=(16, 32),
        text_width=32,
    )


VARIANTS = [(False, "epsilon"), (False, "v_prediction"), (True, "epsilon"), (True, "v_prediction")]
VARIANT_IDS = ["pixel-eps", "pixel-v", "vae-eps", "vae-v"]


@pytest.fixture(scope="session")
def micro_decoder_dir(tmp_path_factory):
    """An untrained pixel-space micro decoder saved as a diffusers folder."""
    path = tmp_path_factory.mktemp("decoder") / "micro"
    micro().save_pretrained(path)
    return path
