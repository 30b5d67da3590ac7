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


@pytest.mark.parametrize("command", ["train", "encode", "reconstruct", "demo", "ask"])
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
    unique = tmp_path / "unique.jsonl"
    assert main(["encode", str(quadrant_folder), "--model", str(model_dir), "-o", str(unique), "--unique-words"]) == 0
    rows = [json.loads(line) for line in unique.read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in records]  # the tokens as written, always
    assert [r["text"] for r in rows] == [model.texts_of(torch.tensor([r["tokens"]]), True)[0] for r in records]


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


def test_demo_runs_offline_on_the_bundled_models(tmp_path, capsys):
    from dediffusion.world.text import VOCABULARY

    out = tmp_path / "demo.png"
    assert main(["demo", "-n", "2", "--num-inference-steps", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    texts, truths = lines[0::2], lines[1::2]
    assert len(texts) == 2 and all(t.strip().startswith("(true scene: a ") for t in truths)
    words = " ".join(texts).split()
    assert len(words) > 2 and set(words) <= set(VOCABULARY)  # readable words of decoder A's vocabulary
    assert Image.open(out).size[1] >= 2 * 32  # a row per image


def test_demo_without_the_bundled_encoder_is_a_clear_error(tmp_path, caplog):
    missing = tmp_path / "no-model"
    assert main(["demo", "--model", str(missing), "--out", str(tmp_path / "demo.png")]) == 2
    assert str(missing) in caplog.text and not (tmp_path / "demo.png").exists()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from test_llm import save_tiny_lm

    return save_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny")


def test_ask_prints_the_encoded_text_then_the_answer(model_dir, lm_dir, quadrant_folder, capsys):
    from dediffusion.data.images import load_image
    from dediffusion.eval.qa import QAItem, answer_freely, answer_questions
    from dediffusion.llm import load_llm

    image, question, colors = quadrant_folder / "a" / "0.png", "what color is the circle?", ("red", "green", "blue")
    common = ["ask", str(image), question, "--model", str(model_dir), "--llm", str(lm_dir)]
    assert main([*common, "--choices", *colors]) == 0
    ranked = capsys.readouterr().out.splitlines()
    assert main(common) == 0
    free = capsys.readouterr().out.splitlines()
    text = DeDiffusion.from_pretrained(model_dir).eval().encode(load_image(image, 8)[None])[0]
    lm = load_llm(str(lm_dir))
    assert ranked == [f"text: {text}", "answer: " + answer_questions(lm, [QAItem(text, question, colors)])[0]]
    assert free == [f"text: {text}", "answer: " + answer_freely(lm, text, question)]


def test_ask_unreadable_image_and_unreachable_llm_are_clear_errors(model_dir, quadrant_folder, tmp_path, caplog):
    import socket

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["ask", str(bad), "what?", "--model", str(model_dir), "--llm", "unused"]) == 2
    assert "bad.png" in caplog.text
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    image = str(quadrant_folder / "a" / "0.png")
    assert main(["ask", image, "what?", "--model", str(model_dir), "--llm", url]) == 2
    assert f"could not reach {url}" in caplog.text
