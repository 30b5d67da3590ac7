"""Decoder B: a tiny pretrain run writes a small, loadable folder; the bundled decoder B loads offline."""

from __future__ import annotations

import json

import pytest
import torch

from dediffusion.models.decoder import DecoderLoadError, TextToImageDecoder
from dediffusion.world.decoder_b import (
    DECODER_B_CONFIG,
    default_decoder_b_path,
    load_decoder_b,
    pretrain_decoder_b,
)

TINY = {"block_out_channels": (8, 16, 16)}


@pytest.fixture(scope="module")
def tiny_decoder_b(tmp_path_factory):
    path = tmp_path_factory.mktemp("decoder_b") / "tiny"
    return pretrain_decoder_b(path, steps=2, batch_size=4, config=TINY, command="test")


def test_pretrain_writes_a_small_folder_without_the_text_encoder_weights(tiny_decoder_b):
    files = {p.relative_to(tiny_decoder_b).as_posix() for p in tiny_decoder_b.rglob("*") if p.is_file()}
    assert "unet/diffusion_pytorch_model.safetensors" in files
    assert not any("text_encoder/model" in f or f.endswith(".bin") for f in files)
    assert sum(p.stat().st_size for p in tiny_decoder_b.rglob("*") if p.is_file()) < 5_000_000  # MiniLM: 90 MB
    index = json.loads((tiny_decoder_b / "model_index.json").read_text())
    assert index["text_encoder"] == ["dediffusion.world.decoder_b", "PackagedTextEncoder"]  # importable by name
    record = json.loads((tiny_decoder_b / "training.json").read_text())
    assert record["command"] == "test" and record["settings"]["steps"] == 2 and record["wall_time_s"] > 0
    assert not list(tiny_decoder_b.parent.glob(".tiny.tmp-*"))  # the atomic save left nothing behind
    assert not (tiny_decoder_b.parent / "tiny.checkpoints").exists()  # removed once the result is saved


def test_tiny_decoder_b_loads_with_the_generic_loader_and_generates(tiny_decoder_b):
    decoder = TextToImageDecoder.from_pretrained(tiny_decoder_b)
    assert decoder.vae is None and decoder.resolution == 32 and decoder.max_length == 40
    assert type(decoder.text_encoder).__name__ == "BertModel" and decoder.text_encoder.config.use_attention_mask
    assert not any(p.requires_grad for p in decoder.parameters())
    images = decoder.generate(["a red circle", ""], guidance_scale=2.0, num_inference_steps=2)
    assert images.shape == (2, 3, 32, 32) and images.min() >= -1 and images.max() <= 1


def test_only_the_unet_was_trained(tiny_decoder_b):
    from transformers import AutoModel

    from dediffusion.world.decoder_b import TEXT_ENCODER_FOLDER, TEXT_ENCODER_PACKAGE, _package_folder

    trained = load_decoder_b(tiny_decoder_b).text_encoder.state_dict()
    folder = _package_folder({"package": TEXT_ENCODER_PACKAGE, "folder": TEXT_ENCODER_FOLDER})
    original = AutoModel.from_pretrained(folder).state_dict()
    assert all(torch.equal(trained[k], original[k]) for k in original)


def test_padding_is_masked_so_the_text_states_ignore_the_length(tiny_decoder_b):
    decoder = load_decoder_b(tiny_decoder_b)
    short = decoder.encode_text(["a red circle"])
    ids, mask = decoder.tokenize(["a red circle"])
    longer = decoder.text_encoder(ids[:, :10], attention_mask=mask[:, :10])[0]
    torch.testing.assert_close(short[:, :5], longer[:, :5], atol=1e-5, rtol=1e-5)


def test_a_changed_text_encoder_is_refused(tiny_decoder_b, tmp_path):
    import shutil

    copy = tmp_path / "decoder"
    shutil.copytree(tiny_decoder_b, copy)
    reference = json.loads((copy / "text_encoder" / "reference.json").read_text())
    (copy / "text_encoder" / "reference.json").write_text(json.dumps({**reference, "sha256": "0" * 64}))
    with pytest.raises(DecoderLoadError, match="differs"):
        load_decoder_b(copy)
    (copy / "text_encoder" / "reference.json").write_text(json.dumps({**reference, "package": "no_such_pkg"}))
    with pytest.raises(DecoderLoadError, match="pip install no-such-pkg"):
        load_decoder_b(copy)


def test_bundled_decoder_b_loads_offline_and_generates():
    path = default_decoder_b_path()
    decoder = load_decoder_b()
    assert decoder.unet.config.block_out_channels == list(DECODER_B_CONFIG["block_out_channels"])
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size < 9_000_000  # fp32 UNet, 2.1M parameters
    image = decoder.generate(["a large red circle in the center on a white background"], num_inference_steps=2)
    assert image.shape == (1, 3, 32, 32) and image.min() >= -1 and image.max() <= 1
