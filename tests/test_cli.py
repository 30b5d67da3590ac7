import json
import shutil

import pytest
import torch
from conftest import micro, tiny_config
from PIL import Image

from dediffusion.cli import build_parser, main
from dediffusion.models.dediffusion import DeDiffusion


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, micro_decoder_dir):
    path = tmp_path_factory.mktemp("model") / "m"
    DeDiffusion(tiny_config(str(micro_decoder_dir)), micro()).save_pretrained(path)
    return path


@pytest.mark.parametrize("command", ["train", "encode", "reconstruct", "demo"])
def test_every_subcommand_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0 and "(default:" in capsys.readouterr().out


def test_encode_writes_jsonl_with_path_text_and_tokens(model_dir, quadrant_folder, tmp_path):
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(quadrant_folder), "--model", str(model_dir), "-o", str(out), "--batch-size", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8 and {"path", "text", "tokens"} <= set(records[0])
    model = DeDiffusion.from_pretrained(model_dir).eval()
    assert all(model.decoder.decode_tokens(torch.tensor([r["tokens"]]))[0] == r["text"] for r in records)


def test_encode_plain_text_to_stdout(model_dir, quadrant_folder, capsys):
    assert main(["encode", str(quadrant_folder / "a"), "--model", str(model_dir), "--format", "text"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def test_encode_skips_bad_files_reports_them_and_finishes_the_rest(model_dir, quadrant_folder, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(quadrant_folder, data)
    (data / "zz_truncated.png").write_bytes((data / "a" / "0.png").read_bytes()[:40])
    Image.new("CMYK", (12, 9), (0, 255, 255, 0)).save(data / "cmyk.jpg")
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(data), "--model", str(model_dir), "-o", str(out)]) == 1
    assert len(out.read_text().splitlines()) == 9  # 8 PNGs + the CMYK JPEG
    assert "zz_truncated.png" in caplog.text and "skipped 1" in caplog.text


def test_reconstruct_writes_a_grid_and_prints_texts(model_dir, quadrant_folder, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = [
        "reconstruct",
        str(quadrant_folder),
        "--model",
        str(model_dir),
        "-o",
        str(out),
        "--max-images",
        "3",
        "--num-inference-steps",
        "2",
    ]
    assert main(args) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    with Image.open(out) as grid:
        assert grid.height > 3 * 100


def test_missing_model_and_empty_folder_are_clear_errors(model_dir, tmp_path, caplog):
    assert main(["encode", str(tmp_path), "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in caplog.text
    assert main(["encode", str(tmp_path), "--model", str(model_dir)]) == 2
    assert "no images found" in caplog.text.lower()


def test_world_sample_writes_images_and_descriptions(tmp_path):
    assert main(["world", "sample", "-n", "3", str(tmp_path / "w")]) == 0
    assert len(list((tmp_path / "w").glob("*.png"))) == 3
    records = [json.loads(line) for line in (tmp_path / "w" / "descriptions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["description"] for r in records)


def test_demo_without_the_bundled_encoder_is_a_clear_error(tmp_path, caplog):
    missing = tmp_path / "no-model"
    assert main(["demo", "--model", str(missing), "--out", str(tmp_path / "demo.png")]) == 2
    assert str(missing) in caplog.text and not (tmp_path / "demo.png").exists()
