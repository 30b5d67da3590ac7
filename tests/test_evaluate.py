"""`dediffusion evaluate` end to end at tiny sizes: world images (every section) and a user's folder."""

import json

import pytest
from conftest import micro, tiny_config
from PIL import Image
from test_llm import save_tiny_lm

from dediffusion.cli import main
from dediffusion.eval.report import write_plots
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.micro import build_micro_decoder
from dediffusion.world import VOCABULARY

pytestmark = pytest.mark.xdist_group(name="evaluate")

TINY = {"resolution": 32, "latent": False, "max_length": 32, "unet_channels": (8, 16), "text_width": 16,
        "cross_attention": (False, True)}  # fmt: skip
SOURCES = {"De-Diffusion", "De-Diffusion, unique words", "prompt inversion", "description", "human", "random tokens",
           "empty"}  # fmt: skip
FAST = ["--num-inference-steps", "2", "--inversion-steps", "2", "--guidance-scales", "1", "3", "--threads", "1"]


def save_world_encoder(root, name: str, num_tokens: int, decoder_dir):
    decoder = build_micro_decoder(VOCABULARY, **TINY)
    config = tiny_config(str(decoder_dir), "", "encoder.image_size=32", f"encoder.num_tokens={num_tokens}")
    DeDiffusion(config, decoder).save_pretrained(root / name)
    return root / name


@pytest.fixture(scope="session")  # session: xdist may interleave other modules, which ends a module scope
def world_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    build_micro_decoder(VOCABULARY, **TINY).save_pretrained(root / "decoder_a")
    build_micro_decoder(VOCABULARY[::-1], **TINY).save_pretrained(root / "decoder_b")
    model = save_world_encoder(root, "encoder", 4, root / "decoder_a")
    short = save_world_encoder(root, "encoder2", 2, root / "decoder_a")
    (short / "training.json").write_text(json.dumps({"steps": 7, "sleep_steps": 3}))  # as `dediffusion train` writes it
    llm = save_tiny_lm(root / "lm", ["<pad>", *sorted(set(" ".join(VOCABULARY).split()))])
    args = ["evaluate", "--encoder", str(model), "--decoder-b", str(root / "decoder_b"), "--num-images", "6"]
    args += ["--ablation-model", str(short), "--few-shot-scenes", "120", "--few-shot-episodes", "10"]
    args += ["--draw-dtype", "bfloat16"]  # redraws under autocast
    args += ["--llm", str(llm), "--qa-scenes", "2", "--qa-shots", "1", "-o", str(root / "report"), *FAST]
    assert main(args) == 0
    return root / "report"


def test_reconstruction_table_has_every_source_decoder_and_guidance(world_report):
    record = json.loads((world_report / "report.json").read_text())
    for decoder in ("decoder_a", "decoder_b"):
        cells = record["reconstruction"][decoder]["cells"]
        assert set(cells) == SOURCES and all(set(by_scale) == {"1.0", "3.0"} for by_scale in cells.values())
        for by_scale in cells.values():
            for cell in by_scale.values():
                assert 0 <= cell["scene_accuracy"] <= 1 and cell["fd_effnet"] >= 0
        assert cells["empty"]["1.0"] == cells["empty"]["3.0"]  # guidance does not change an empty prompt
    assert len(record["texts"]["prompt inversion"]) == 6 and not any(record["texts"]["empty"])


def test_cost_ablation_few_shot_and_qa_sections(world_report):
    record = json.loads((world_report / "report.json").read_text())
    cost = record["cost"]
    assert cost["speedup"] == pytest.approx(cost["encoder_images_per_s"] / cost["inversion_images_per_s"])
    assert [row["num_tokens"] for row in record["token_ablation"]] == [2, 4]
    config = DeDiffusion.from_pretrained(record["token_ablation"][1]["model"]).config
    budgets = [(row["sleep_steps"], row["steps"]) for row in record["token_ablation"]]
    assert budgets == [(3, 7), (config.sleep.steps, config.train.steps)]  # training.json, else config
    assert "| 2 | 3 sleep + 7 wake |" in (world_report / "report.md").read_text()
    main = next(row for row in record["token_ablation"] if row["model"] == record["settings"]["model"])
    for key, scored in record["reconstruction"].items():  # the main encoder's row: its reconstruction cells
        assert main[key] in scored["cells"]["De-Diffusion"].values()
    assert record["settings"]["draw_dtype"] == "bfloat16"
    assert record["few_shot"]["blind"] == {"shape": 0.2, "color": 0.2}  # identical texts: exactly chance
    assert set(record["qa"]["shots"]) == {"0", "1"}
    qa_sources = {"blind", "human", "De-Diffusion", "De-Diffusion, unique words", "description"}
    assert set(record["qa"]["shots"]["0"]) == qa_sources
    assert record["qa"]["num_questions"] > 0 and record["qa"]["wall_time_s"] > 0


def test_report_files_and_markdown(world_report):
    markdown = (world_report / "report.md").read_text()
    for heading in ("Reconstruction and transfer", "Cost", "Token-length ablation", "Few-shot", "Question answering"):
        assert f"## {heading}" in markdown
    assert "| prompt inversion |" in markdown and "command: `dediffusion evaluate" in markdown
    assert "s (redraws in bfloat16)" in markdown  # the footer names the dtype the redraws ran in
    assert "### decoder_a: scene accuracy by fact kind" in markdown
    header = "| prompt source | background | position | shape | color | size | all facts (pooled) | objects per image |"
    assert header in markdown
    record = json.loads((world_report / "report.json").read_text())
    assert f"The original images hold {record['objects_per_image']:.2f} objects per image." in markdown
    for name in ("guidance_sweep.png", "token_ablation.png", "examples_dediffusion.png"):
        assert Image.open(world_report / name).size[0] > 100  # matplotlib comes with the dev extra


def test_report_without_matplotlib_says_so(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert write_plots({"reconstruction": {}, "token_ablation": []}, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


def test_a_user_folder_gets_what_needs_no_answer_key(quadrant_folder, micro_decoder_dir, tmp_path):
    model = tmp_path / "m"
    DeDiffusion(tiny_config(str(micro_decoder_dir)), micro()).save_pretrained(model)
    args = ["evaluate", "--encoder", str(model), "--decoder-b", "none", "--images", str(quadrant_folder)]
    assert main([*args, "--num-images", "5", "-o", str(tmp_path / "r"), *FAST]) == 0
    record = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(record["reconstruction"]) == {"decoder_a"} and record["num_images"] == 5
    sources = {"De-Diffusion", "De-Diffusion, unique words", "prompt inversion", "random tokens", "empty"}
    assert set(record["reconstruction"]["decoder_a"]["cells"]) == sources
    assert record["reconstruction"]["decoder_a"]["best"]["De-Diffusion"]["scene_accuracy"] is None
    assert "needs an answer key" in record["few_shot"]["skipped"]
    assert "n/a" in (tmp_path / "r" / "report.md").read_text()


def test_draw_dtype_auto_takes_bfloat16_only_where_the_hardware_computes_it(monkeypatch):
    import torch

    from dediffusion.models import sampling as suite
    from dediffusion.records import machine_summary

    for flag in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, flag, lambda: False)
    assert not suite.native_bfloat16(torch.device("cpu"))
    assert suite.resolve_draw_dtype("auto") == torch.float32
    assert "AMX" not in machine_summary()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert suite.native_bfloat16(torch.device("cpu")) and suite.resolve_draw_dtype("auto") == torch.bfloat16
    assert machine_summary().endswith(f"AMX; torch {torch.__version__}")  # results record the bfloat16 hardware
    assert not suite.native_bfloat16(torch.device("meta"))
    assert suite.resolve_draw_dtype("float32") == torch.float32  # asked for by name: taken as it is
    with pytest.raises(ValueError, match="auto, float32 or bfloat16, not 'float16'"):
        suite.resolve_draw_dtype("float16")
