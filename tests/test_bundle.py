import json
import shutil

import pytest
from conftest import micro, tiny_config

from dediffusion.cli import main
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.world.bundle import BUDGET_BYTES, bundle_artifact


@pytest.fixture
def assets(tmp_path, micro_decoder_dir):
    folder = tmp_path / "assets"
    shutil.copytree(micro_decoder_dir, folder / "decoder_a")
    return folder


def save_encoder(folder, decoder_path: str):
    DeDiffusion(tiny_config(decoder_path), micro()).save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps({"steps": 6}))
    return folder


def test_an_encoder_naming_a_bundled_decoder_is_copied_in_whole(tmp_path, assets):
    source = save_encoder(tmp_path / "run" / "final", "bundled:decoder_a")
    size = bundle_artifact(source, "world_encoder", assets)
    copied = assets / "world_encoder"
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in source.iterdir())
    assert (copied / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert size == sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())


def test_an_encoder_trained_against_an_unbundled_decoder_is_refused(tmp_path, assets, micro_decoder_dir):
    source = save_encoder(tmp_path / "final", str(micro_decoder_dir))
    with pytest.raises(ValueError, match="decoder.path=bundled:decoder_a"):
        bundle_artifact(source, "world_encoder", assets)
    assert not (assets / "world_encoder").exists()


def test_a_folder_of_the_wrong_kind_or_over_budget_leaves_the_bundle_as_it_was(tmp_path, assets, monkeypatch):
    before = (assets / "decoder_a" / "model_index.json").read_text()
    with pytest.raises(ValueError, match="not a decoder_a folder"):
        bundle_artifact(save_encoder(tmp_path / "final", "bundled:decoder_a"), "decoder_a", assets)
    big = tmp_path / "big"
    shutil.copytree(assets / "decoder_a", big)
    (big / "padding.bin").write_bytes(b"\0" * 1000)
    monkeypatch.setattr("dediffusion.world.bundle.BUDGET_BYTES", 1000)
    with pytest.raises(ValueError, match="over its 0.001 MB budget"):
        bundle_artifact(big, "decoder_b", assets)
    assert not (assets / "decoder_b").exists() and (assets / "decoder_a" / "model_index.json").read_text() == before
    assert BUDGET_BYTES == 25_000_000


def test_cli_reports_a_bad_source_without_touching_the_package(tmp_path, caplog):
    assert main(["world", "bundle", str(tmp_path), "world_encoder"]) == 2
    assert "has no model.safetensors" in caplog.text
