"""The command line through `main([...])`: every command on tiny inputs, and every bad argument and bad file a
user can give: exit status 2, one line naming the value or file, nothing written, no traceback."""

import json
import shutil

import pytest
import torch
from conftest import TINY_ENCODER, TINY_TRAIN, micro, tiny_config
from PIL import Image

from dediffusion.cli import main
from dediffusion.models.dediffusion import DeDiffusion

COMMANDS = [
    ["train"],
    ["encode"],
    ["reconstruct"],
    ["demo"],
    ["ask"],
    ["evaluate"],
    ["world", "sample"],
    ["world", "texts"],
    ["world", "pretrain-decoder"],
    ["world", "pretrain-perception"],
    ["world", "bundle"],
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, micro_decoder_dir):
    path = tmp_path_factory.mktemp("model") / "m"
    DeDiffusion(tiny_config(str(micro_decoder_dir)), micro()).save_pretrained(path)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty working folder, so a test can check that nothing at all was written."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files_in(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:\n  dediffusion " + command[-1] in out or "example:\n  dediffusion " + " ".join(command) in out
    assert "--quiet" in out


def test_help_hides_old_spellings_and_shows_defaults(capsys):
    assert main(["encode", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--encoder" in out and "--model" not in out and "(default: bundled:world_encoder)" in out


# ---- encode -------------------------------------------------------------------------------------


def test_encode_writes_jsonl_with_path_text_and_tokens(model_dir, quadrant_folder, tmp_path):
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(out), "--batch-size", "3"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8 and {"path", "text", "tokens"} <= set(records[0])
    model = DeDiffusion.from_pretrained(model_dir).eval()
    assert all(model.decoder.decode_tokens(torch.tensor([r["tokens"]]))[0] == r["text"] for r in records)
    unique = tmp_path / "unique.jsonl"
    assert main(["encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(unique), "--unique-words"]) == 0
    rows = [json.loads(line) for line in unique.read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in records]  # the tokens as written, always
    assert [r["text"] for r in rows] == [model.texts_of(torch.tensor([r["tokens"]]), True)[0] for r in records]


def test_encode_refine_matches_the_library_and_does_not_depend_on_the_batch_size(model_dir, quadrant_folder, tmp_path):
    from dediffusion.data.images import ImageFolder, load_batch
    from dediffusion.models.refine import refine_tokens

    runs = {}
    for batch_size in ("3", "8"):
        out = tmp_path / f"refined{batch_size}.jsonl"
        argv = ["encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(out), "--refine", "2"]
        assert main([*argv, "--batch-size", batch_size, "--seed", "5"]) == 0
        runs[batch_size] = [json.loads(line) for line in out.read_text().splitlines()]
    assert runs["3"] == runs["8"]
    model = DeDiffusion.from_pretrained(model_dir).eval()
    dataset = ImageFolder([quadrant_folder], model.decoder.resolution)
    images, _, _ = load_batch(dataset, list(range(len(dataset))))
    allowed = model.vocab_mask.nonzero().squeeze(1)
    bias = model.config.train.timestep_bias
    ids, _ = refine_tokens(model.decoder, images, model.encode_tokens(images), allowed, 2, timestep_bias=bias, seed=5)
    assert [r["tokens"] for r in runs["8"]] == ids.tolist()


def test_encode_text_format_carries_the_path(model_dir, quadrant_folder, capsys):
    assert main(["encode", str(quadrant_folder / "a"), "--encoder", str(model_dir), "--format", "text"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.split("\t")[0].endswith(".png") for line in lines)
    assert lines[0].split("\t")[0] == str(quadrant_folder / "a" / "0.png")


def test_encode_reads_gif_and_records_bad_files(model_dir, quadrant_folder, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(quadrant_folder, data)
    (data / "zz_truncated.png").write_bytes((data / "a" / "0.png").read_bytes()[:40])
    Image.new("CMYK", (12, 9), (0, 255, 255, 0)).save(data / "cmyk.jpg")
    Image.new("P", (8, 8), 3).save(data / "anim.gif")
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(data), "--encoder", str(model_dir), "-o", str(out)]) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len([r for r in records if "text" in r]) == 10  # 8 PNGs, the CMYK JPEG and the GIF
    failed = [r for r in records if "error" in r]
    assert [r["path"] for r in failed] == [str(data / "zz_truncated.png")] and "truncated" in failed[0]["error"]
    assert "zz_truncated.png" in caplog.text and "skipped 1" in caplog.text


def test_encode_when_every_file_fails_says_so_and_exits_nonzero(model_dir, tmp_path, caplog):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(tmp_path / "bad.png"), "--encoder", str(model_dir), "-o", str(out)]) == 2
    assert "none of the 1 images could be read" in caplog.text
    assert [set(json.loads(line)) for line in out.read_text().splitlines()] == [{"path", "error"}]


def test_an_image_over_max_pixels_names_the_option_that_exists(model_dir, quadrant_folder, tmp_path, caplog):
    out = tmp_path / "texts.jsonl"
    args = ["encode", str(quadrant_folder / "a" / "0.png"), "--encoder", str(model_dir), "--max-pixels", "10"]
    assert main([*args, "-o", str(out)]) == 2
    assert "--max-pixels" in caplog.text and "too large" in caplog.text


def test_images_far_from_the_training_size_get_a_notice(model_dir, quadrant_folder, tmp_path, caplog):
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "photo.jpg")
    assert main(["encode", str(quadrant_folder / "a"), "--encoder", str(model_dir), "-o", str(tmp_path / "a")]) == 0
    assert "trained on" not in caplog.text
    assert main(["encode", str(tmp_path / "photo.jpg"), "--encoder", str(model_dir), "-o", str(tmp_path / "b")]) == 0
    assert "trained on 8x8 images" in caplog.text and "photo.jpg (300x200)" in caplog.text


def test_quiet_silences_info_lines(model_dir, quadrant_folder, tmp_path, caplog):
    out = tmp_path / "texts.jsonl"
    assert main(["--quiet", "encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(out)]) == 0
    assert main(["encode", str(quadrant_folder), "-q", "--encoder", str(model_dir), "-o", str(out)]) == 0
    assert "wrote" not in caplog.text
    assert main(["encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(out)]) == 0
    assert "wrote" in caplog.text


class Terminal:
    """A stand-in standard error that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_bars_show_on_a_terminal_only_and_not_when_quiet(model_dir, quadrant_folder, tmp_path, monkeypatch):
    import sys

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["encode", str(quadrant_folder), "--encoder", str(model_dir), "-o", str(tmp_path / "t.jsonl")]
    assert main(args) == 0
    assert "encode" in terminal.text and "8/8" in terminal.text and "image/s" in terminal.text
    terminal.text = ""
    assert main(["--quiet", *args]) == 0
    assert "8/8" not in terminal.text
    monkeypatch.setattr(Terminal, "isatty", lambda self: False)
    assert main(args) == 0
    assert "8/8" not in terminal.text  # not a terminal: CI logs get no bars


# ---- reconstruct --------------------------------------------------------------------------------


def reconstruct_args(model_dir, images, out, *extra):
    return [
        "reconstruct",
        str(images),
        "--encoder",
        str(model_dir),
        "-o",
        str(out),
        "--num-inference-steps",
        "2",
        *extra,
    ]


def test_reconstruct_writes_a_png_and_a_jsonl_line_per_image_and_decoder(
    model_dir, micro_decoder_dir, quadrant_folder, tmp_path, capsys
):
    out = tmp_path / "recon"
    extra = ["--max-images", "3", "--batch-size", "2", "--transfer-decoder", str(micro_decoder_dir), "--seed", "5"]
    assert main(reconstruct_args(model_dir, quadrant_folder, out, *extra)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in (out / "reconstructions.jsonl").read_text().splitlines()]
    assert len(printed) == 3 and len(rows) == 6 and not (out / "grid.png").exists()
    assert {"path", "text", "decoder", "seed", "guidance_scale", "output"} <= set(rows[0])
    assert sorted(r["seed"] for r in rows) == [5, 5, 6, 6, 7, 7]
    assert {r["decoder"] for r in rows} == {str(micro_decoder_dir), rows[0]["decoder"]}
    for row in rows:
        with Image.open(row["output"]) as image:
            assert image.size == (8, 8)
    assert printed[0] == f"{rows[0]['path']}\t{rows[0]['text']}"


def test_reconstruct_batches_do_not_change_the_result(model_dir, quadrant_folder, tmp_path):
    import numpy as np

    for batch in ("1", "3"):
        assert main(reconstruct_args(model_dir, quadrant_folder, tmp_path / batch, "--batch-size", batch)) == 0
    one, three = ([json.loads(line) for line in (tmp_path / b / "reconstructions.jsonl").open()] for b in "13")
    assert [r["text"] for r in one] == [r["text"] for r in three] and len(one) == 8
    for a, b in zip(one, three):
        difference = np.abs(np.asarray(Image.open(a["output"]), int) - np.asarray(Image.open(b["output"]), int))
        assert difference.max() <= 2


def test_reconstruct_writes_the_grid_when_asked(model_dir, quadrant_folder, tmp_path):
    assert main(reconstruct_args(model_dir, quadrant_folder, tmp_path / "r", "--max-images", "2", "--grid")) == 0
    with Image.open(tmp_path / "r" / "grid.png") as grid:
        assert grid.height > 2 * 100
    assert len(list((tmp_path / "r").glob("0000*.png"))) == 2


# ---- train, and the tiny SD-class decoder through --decoder alone ---------------------------------


@pytest.fixture(scope="module")
def latent_decoder_dir(tmp_path_factory):
    """A tiny Stable-Diffusion-shaped folder: tokenizer, CLIP text encoder, UNet, VAE, scheduler."""
    path = tmp_path_factory.mktemp("sd") / "tiny-sd"
    micro(latent=True).save_pretrained(path)
    return path


def test_a_tiny_sd_folder_trains_encodes_and_reconstructs_through_decoder_alone(
    latent_decoder_dir, quadrant_folder, tmp_path, caplog
):
    run = tmp_path / "run"
    small = ["encoder.image_size=32", "train.batch_size=2", "train.steps=2", "train.sample_every=0"]
    sets = [a for s in small for a in ("--set", s)]
    train = ["train", "--preset", "cpu-small", "--decoder", str(latent_decoder_dir), "--data", str(quadrant_folder)]
    assert main([*train, "-o", str(run), *sets]) == 0
    assert "using 6 tokens" in caplog.text  # cpu-small's 32 tokens, cut to what the tiny text encoder takes
    common = ["--encoder", str(run / "final"), "--decoder", str(latent_decoder_dir)]
    assert main(["encode", str(quadrant_folder), *common, "-o", str(tmp_path / "t.jsonl")]) == 0
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 8
    recon = ["reconstruct", str(quadrant_folder), *common, "-o", str(tmp_path / "r"), "--num-inference-steps", "2"]
    assert main([*recon, "--max-images", "2"]) == 0
    assert len(list((tmp_path / "r").glob("*.png"))) == 2


def test_the_sd2_base_preset_against_a_small_decoder_uses_the_tokens_it_takes(
    micro_decoder_dir, quadrant_folder, tmp_path, caplog
):
    small = ["encoder.image_size=32", "encoder.width=32", "encoder.depth=1", "encoder.num_heads=2"]
    cpu = ["train.steps=1", "train.batch_size=2", "train.mixed_precision=no", "decoder.dtype=float32"]
    sets = [a for s in [*small, *cpu, "train.sample_every=0"] for a in ("--set", s)]
    args = ["train", "--preset", "sd2-base", "--decoder", str(micro_decoder_dir), "--data", str(quadrant_folder)]
    assert main([*args, "-o", str(tmp_path / "run"), *sets]) == 0
    assert "encoder.num_tokens=75 is more than this decoder's text encoder takes; using 6 tokens" in caplog.text


def tiny_train(decoder_dir, data, out, steps, *extra):
    sets = [f"train.steps={steps}", *TINY_ENCODER, *TINY_TRAIN]
    return ["train", "--decoder", str(decoder_dir), "--data", str(data), "-o", str(out)] + [
        a for s in sets for a in ("--set", s)
    ] + list(extra)  # fmt: skip


def test_nan_loss_names_phase_and_step_and_its_advice_works(
    micro_decoder_dir, quadrant_folder, tmp_path, caplog, monkeypatch
):
    original = DeDiffusion.forward

    def poisoned(self, images, seeds, step=0, texts=None):
        out = original(self, images, seeds, step, texts)
        out["loss"] = out["loss"] * (float("nan") if step >= 2 else 1.0)
        return out

    monkeypatch.setattr(DeDiffusion, "forward", poisoned)
    run = tmp_path / "run"
    assert main(tiny_train(micro_decoder_dir, quadrant_folder, run, 4)) == 2
    assert "wake step 3/4" in caplog.text and "step-00000002" in caplog.text
    advice = caplog.text.split("Rerun the same train command with ")[1].split(" (or")[0].split()
    assert advice[:3] == ["--resume", "latest", "--set"] and advice[3].startswith("train.learning_rate=")
    monkeypatch.setattr(DeDiffusion, "forward", original)
    assert main([*tiny_train(micro_decoder_dir, quadrant_folder, run, 4), *advice]) == 0
    assert (run / "final" / "model.safetensors").is_file() and "train.learning_rate" in caplog.text


def test_resume_refuses_a_changed_architecture_and_cleans_stale_temporaries(
    micro_decoder_dir, quadrant_folder, tmp_path, caplog
):
    run = tmp_path / "run"
    assert main(tiny_train(micro_decoder_dir, quadrant_folder, run, 2)) == 0
    stale = run / "checkpoints" / ".step-00000004.tmp-1a2b3c4d"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert (
        main(
            [*tiny_train(micro_decoder_dir, quadrant_folder, run, 2), "--set", "encoder.width=64", "--resume", "latest"]
        )
        == 2
    )
    assert "encoder.width" in caplog.text and "may change only" in caplog.text
    assert main([*tiny_train(micro_decoder_dir, quadrant_folder, run, 4), "--resume", "latest"]) == 0
    assert not stale.exists() and (run / "checkpoints" / "step-00000004").is_dir()


def test_train_without_a_run_folder_or_decoder_is_a_clear_error(quadrant_folder, in_tmp, caplog):
    assert main(["train", "--data", str(quadrant_folder)]) == 2
    assert "-o runs/NAME" in caplog.text
    assert main(["train", "--data", str(quadrant_folder), "-o", "run"]) == 2
    assert "pass --decoder" in caplog.text and files_in(in_tmp) == []


# ---- bad arguments: one line naming the value, exit 2, nothing written ----------------------------


BAD_ARGUMENTS = [
    (["encode", "x.png", "--batch-size", "-3"], "argument --batch-size: '-3' must be at least 1"),
    (["encode", "x.png", "--batch-size", "0"], "argument --batch-size: '0' must be at least 1"),
    (["encode", "x.png", "--batch-size", "many"], "argument --batch-size: 'many' is not a whole number"),
    (["encode", "x.png", "--threads", "0"], "argument --threads: '0' must be at least 1"),
    (["reconstruct", "x.png", "--max-images", "0"], "argument --max-images: '0' must be at least 1"),
    (["reconstruct", "x.png", "--max-images", "-1"], "argument --max-images: '-1' must be at least 1"),
    (["reconstruct", "x.png", "--batch-size", "0"], "argument --batch-size: '0' must be at least 1"),
    (["reconstruct", "x.png", "--num-inference-steps", "0"], "argument --num-inference-steps: '0' must be at least 1"),
    (["reconstruct", "x.png", "--guidance-scale", "nan"], "argument --guidance-scale: 'nan' must be a finite number"),
    (["reconstruct", "x.png", "--seed", "-1"], "argument --seed: '-1' must be 0 or more"),
    (["demo", "-n", "0"], "argument -n/--num-images: '0' must be at least 1"),
    (["demo", "--num-inference-steps", "0"], "argument --num-inference-steps: '0' must be at least 1"),
    (["evaluate", "--num-images", "0"], "argument --num-images: '0' must be at least 1"),
    (["world", "sample", "-n", "0", "-o", "w"], "argument -n/--num-images: '0' must be at least 1"),
    (["world", "pretrain-perception", "--steps", "0", "-o", "p"], "argument --steps: '0' must be at least 1"),
    (["encode", "x.png", "--format", "csv"], "argument --format: invalid choice: 'csv'"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_clear_line(argv, message, in_tmp, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and files_in(in_tmp) == []


def test_world_sample_with_two_folders_is_a_clear_error(in_tmp, caplog):
    assert main(["world", "sample", "-n", "1", "old", "-o", "new"]) == 2
    assert "give the folder once" in caplog.text and files_in(in_tmp) == []
    assert main(["world", "sample", "-n", "1"]) == 2 and "-o FOLDER" in caplog.text


# ---- bad model and decoder files ------------------------------------------------------------------


def damage_truncated(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def damage_corrupt(folder):
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)


def damage_foreign(folder):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(folder / "model.safetensors"))


def damage_config(folder):
    (folder / "config.yaml").write_text("encoder: [unclosed\n  num_tokens: : 4")


def damage_decoder_record(folder):
    (folder / "decoder.json").write_text('{"path": "x", ')


def remove_config(folder):
    (folder / "config.yaml").unlink()


BAD_MODELS = [
    (damage_truncated, "model.safetensors' is damaged"),
    (damage_corrupt, "model.safetensors' is damaged"),
    (damage_foreign, "holds no De-Diffusion encoder"),
    (damage_config, "config.yaml' is not valid YAML"),
    (damage_decoder_record, "decoder.json' is damaged"),
    (remove_config, "is not a De-Diffusion model folder (no config.yaml)"),
]


@pytest.mark.parametrize("damage, message", BAD_MODELS, ids=[d.__name__ for d, _ in BAD_MODELS])
@pytest.mark.parametrize("command", ["encode", "reconstruct"])
def test_a_damaged_model_folder_is_one_clear_line(damage, message, command, model_dir, quadrant_folder, in_tmp, caplog):
    broken = in_tmp / "broken"
    shutil.copytree(model_dir, broken)
    damage(broken)
    before = files_in(in_tmp)
    assert main([command, str(quadrant_folder), "--encoder", str(broken), "-o", "out"]) == 2
    assert message in caplog.text and "Traceback" not in caplog.text
    assert files_in(in_tmp) == before


def test_a_missing_model_folder_and_an_empty_image_folder_are_clear_errors(model_dir, in_tmp, caplog):
    (in_tmp / "empty").mkdir()
    assert main(["encode", "empty", "--encoder", "nope"]) == 2
    assert "model folder 'nope' does not exist" in caplog.text
    assert main(["encode", "empty", "--encoder", str(model_dir)]) == 2
    assert "no images found" in caplog.text.lower() and files_in(in_tmp) == ["empty"]


def break_unet_config(folder):
    (folder / "unet" / "config.json").write_text("{not json")


def truncate_unet_weights(folder):
    file = folder / "unet" / "diffusion_pytorch_model.safetensors"
    file.write_bytes(file.read_bytes()[:100])


def break_index(folder):
    (folder / "model_index.json").write_text("[1, 2")


BAD_DECODERS = [
    (break_unet_config, "unet"),
    (truncate_unet_weights, "cannot load the unet of decoder"),
    (break_index, "model_index.json"),
]


@pytest.mark.parametrize("damage, message", BAD_DECODERS, ids=[d.__name__ for d, _ in BAD_DECODERS])
def test_a_damaged_decoder_folder_is_one_clear_line(
    damage, message, model_dir, micro_decoder_dir, quadrant_folder, in_tmp, caplog
):
    broken = in_tmp / "decoder"
    shutil.copytree(micro_decoder_dir, broken)
    damage(broken)
    args = reconstruct_args(model_dir, quadrant_folder, "out", "--decoder", str(broken))
    assert main(args) == 2
    assert message in caplog.text and str(broken) in caplog.text and not (in_tmp / "out").exists()


# ---- old spellings still work, with a warning -----------------------------------------------------


def test_old_spellings_work_for_one_release_with_a_warning(model_dir, quadrant_folder, in_tmp, caplog):
    assert main(["encode", str(quadrant_folder / "a"), "--model", str(model_dir), "-o", "t.jsonl"]) == 0
    assert "--model is deprecated" in caplog.text and "use --encoder" in caplog.text
    assert main(["world", "sample", "-n", "2", "old-style"]) == 0
    assert len(list((in_tmp / "old-style").glob("*.png"))) == 2 and "positional folder" in caplog.text
    old_grid = reconstruct_args(model_dir, quadrant_folder, "grid.png", "--max-images", "2")
    assert main(old_grid) == 0 and (in_tmp / "grid.png").is_file() and "-o FILE.png is deprecated" in caplog.text


# ---- world, demo, ask -----------------------------------------------------------------------------


def test_world_sample_writes_images_and_descriptions(tmp_path, caplog):
    assert main(["world", "sample", "-n", "3", "-o", str(tmp_path / "w")]) == 0
    assert len(list((tmp_path / "w").glob("*.png"))) == 3
    records = [json.loads(line) for line in (tmp_path / "w" / "descriptions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["description"] for r in records)
    assert caplog.text.count("wrote") == 1  # one line per event


def test_demo_runs_offline_on_the_bundled_models(tmp_path, capsys, caplog):
    from dediffusion.world.text import VOCABULARY

    out = tmp_path / "demo.png"
    assert main(["demo", "-n", "3", "--batch-size", "2", "--num-inference-steps", "2", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    texts, truths = lines[0::2], lines[1::2]
    assert len(texts) == 3 and all(t.strip().startswith("(true scene: a ") for t in truths)
    words = " ".join(texts).split()
    assert len(words) > 2 and set(words) <= set(VOCABULARY)  # readable words of decoder A's vocabulary
    assert Image.open(out).size[1] >= 3 * 32  # a row per image
    assert caplog.text.count("wrote") == 1


def test_demo_without_the_bundled_encoder_is_a_clear_error(tmp_path, caplog):
    missing = tmp_path / "no-model"
    assert main(["demo", "--encoder", str(missing), "-o", str(tmp_path / "demo.png")]) == 2
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
    common = ["ask", str(image), question, "--encoder", str(model_dir), "--llm", str(lm_dir)]
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
    assert main(["ask", str(bad), "what?", "--encoder", str(model_dir), "--llm", "unused"]) == 2
    assert "bad.png" in caplog.text
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    image = str(quadrant_folder / "a" / "0.png")
    assert main(["ask", image, "what?", "--encoder", str(model_dir), "--llm", url]) == 2
    assert f"could not reach {url}" in caplog.text
