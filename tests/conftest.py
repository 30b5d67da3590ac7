"""Test setup: CPU only, fixed seeds, no network; micro decoders built from configs."""

from __future__ import annotations

import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy/BLAS too: two test workers share two cores
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402
import torch  # noqa: E402
from quadrants import WORDS  # noqa: E402

# one thread: these models are tiny, and two OpenMP threads stall badly when the other core is busy
torch.set_num_threads(1)


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


TINY_ENCODER = [
    "encoder.backbone=conv",
    "encoder.backbone_channels=[8,16]",
    "encoder.image_size=8",
    "encoder.num_tokens=4",
    "encoder.width=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
]


TINY_TRAIN = [
    "train.batch_size=4",
    "train.checkpoint_every=2",
    "train.keep_checkpoints=2",
    "train.log_every=1",
    "train.warmup_steps=1",
    "train.learning_rate=0.003",
]


def tiny_config(decoder_path="", data="", *overrides):
    """A De-Diffusion config small enough to train in seconds on a CPU (6 steps unless overridden)."""
    from dediffusion.config import load_config

    sets = [f"decoder.path={decoder_path}", f"train.data={data}", "train.steps=6", *TINY_ENCODER, *TINY_TRAIN]
    return load_config(None, [*sets, *overrides])


@pytest.fixture(scope="session")
def quadrant_folder(tmp_path_factory):
    """Eight 8x8 quadrant PNGs in nested folders."""
    from quadrants import sample_quadrants

    from dediffusion.data.images import to_pil

    root = tmp_path_factory.mktemp("images")
    images, _ = sample_quadrants(8, 8, torch.Generator().manual_seed(1), p_empty=0)
    for i, image in enumerate(images):
        folder = root / ("a" if i < 4 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        to_pil(image).save(folder / f"{i}.png")
    return root
