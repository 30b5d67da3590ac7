"""The paper's COCO experiment as a recipe (docs/coco.md), on tiny stand-ins: a tiny random Stable Diffusion
pipeline for SD 2-base, a handful of small photos with a COCO annotation file for COCO, and a tiny random
feature network for the FID Inception. The documented commands run as written, plus flags that make them
tiny; the FID is torchmetrics' over whichever network is given, so the code path is the one users run."""

from __future__ import annotations

import json
import math
import re
import shlex
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from test_pipelines import sd_dir, vocab_dir  # noqa: F401 (fixtures: a tiny SD pipeline folder)
from torch import nn

from dediffusion.cli import build_parser, main
from dediffusion.data.captions import CaptionsError, captioned_images, read_captions
from dediffusion.eval import fid
from dediffusion.eval.coco import CAPTION, TEXT, CocoSettings, run_coco_fid

DOC = Path(__file__).parent.parent / "docs" / "coco.md"
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
# flags appended to the documented commands (later flags win in argparse) to make them run in seconds
TINY = {
    "train": [
        *("--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2"),
        *("--set", "train.warmup_steps=1", "--set", "encoder.image_size=32", "--set", "encoder.width=32"),
        *("--set", "encoder.depth=1", "--set", "encoder.num_heads=2"),
    ],
    "evaluate-coco": [
        *("--num-images", "5", "--resolution", "32", "--guidance-scales", "1", "3", "--num-inference-steps", "2"),
        *("--batch-size", "4", "--device", "cpu", "--dtype", "float32"),
    ],
}


class TinyFeatures(nn.Module):
    """The FID Inception's stand-in: uint8 images (B, 3, H, W) -> (B, 4) features, random and fixed."""

    num_features = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(images.float() / 127.5 - 1)).mean(dim=(2, 3))


def photo(index: int, size=(40, 30)) -> Image.Image:
    """A small 'photo': a background and a shape in another colour, varying with `index`."""
    image = Image.new("RGB", size, COLOURS[index % 7])
    left, top = 4 + 3 * (index % 5), 3 + 2 * (index % 4)
    ImageDraw.Draw(image).ellipse([left, top, left + 16, top + 14], fill=COLOURS[(index + 3) % 7])
    return image


def caption(index: int) -> str:
    return f"a {COLOURS[(index + 3) % 7]} ball on {COLOURS[index % 7]}"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """COCO's layout: train2014/ and val2014/ photos, annotations/captions_val2014.json (two captions per
    photo, the first with COCO's stray whitespace, and one photo that is not in the folder)."""
    root = tmp_path_factory.mktemp("coco")
    for split, count in (("train2014", 4), ("val2014", 6)):
        (root / split).mkdir()
        for i in range(count):
            photo(i + 10 * (split == "val2014")).save(root / split / f"COCO_{split}_{i + 1:012d}.jpg", quality=95)
    names = [f"COCO_val2014_{i + 1:012d}.jpg" for i in range(7)]  # the 7th is missing
    annotations = [{"id": 100 + i, "image_id": i + 1, "caption": f" {caption(i + 10)}.\n"} for i in range(7)]
    annotations += [{"id": 200 + i, "image_id": i + 1, "caption": "a second caption"} for i in range(7)]
    data = {"images": [{"id": i + 1, "file_name": name} for i, name in enumerate(names)], "annotations": annotations}
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(data))
    return root


def test_coco_annotations_give_each_photo_its_first_caption(coco, caplog):
    pairs = captioned_images(coco / "val2014")
    assert [p.path.name for p in pairs] == [f"COCO_val2014_{i + 1:012d}.jpg" for i in range(6)]
    assert [p.caption for p in pairs] == [f"{caption(i + 10)}." for i in range(6)]
    assert "1 of the 7 images captioned" in caplog.text


def test_a_captions_jsonl_beside_the_photos_and_its_errors(tmp_path):
    photo(0).save(tmp_path / "a.png")
    (tmp_path / "captions.jsonl").write_text('{"file_name": "a.png", "caption": "a  ball"}\n\n')
    assert [(p.path.name, p.caption) for p in captioned_images(tmp_path)] == [("a.png", "a ball")]
    (tmp_path / "captions.jsonl").write_text('{"file_name": "a.png"}\n')
    with pytest.raises(CaptionsError, match="line 1: expected a JSON object with 'file_name'"):
        captioned_images(tmp_path)
    (tmp_path / "captions.jsonl").write_text('{"file_name": "b.png", "caption": "x"}\n')
    with pytest.raises(CaptionsError, match="none of the 1 images named in"):
        captioned_images(tmp_path)
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(CaptionsError, match="is not a COCO captions file"):
        read_captions(tmp_path / "bad.json")


class PhotoTarget:
    """A 'pipeline' that draws each caption's own photo (at its own size) and noise for any other text."""

    def __init__(self, pairs):
        from dediffusion.data.images import open_rgb, to_tensor

        self.photos = {p.caption: to_tensor(open_rgb(p.path)) for p in pairs}

    def generate(self, texts, guidance_scale, num_inference_steps, seeds):
        noise = [torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in seeds]
        return torch.stack([self.photos.get(t, n) for t, n in zip(texts, noise)])


class WordEncoder:
    """An 'encoder' that writes one fixed word for every photo."""

    class decoder:
        resolution = 16

    device = torch.device("cpu")

    def encode(self, images, unique_words=False):
        return ["ball"] * len(images)


def test_fid_is_zero_when_the_redraws_are_the_photos_and_positive_otherwise(coco):
    settings = CocoSettings(str(coco / "val2014"), resolution=24, guidance_scales=(1.0, 2.0), batch_size=4)
    record = run_coco_fid(WordEncoder(), PhotoTarget(captioned_images(coco / "val2014")), settings, TinyFeatures())
    fids = {(r["source"], r["guidance_scale"]): r["fid"] for r in record["rows"]}
    assert len(fids) == 4 and all(r["num_images"] == 6 for r in record["rows"])
    assert fids[CAPTION, 1.0] < 1e-3 and fids[CAPTION, 2.0] < 1e-3  # the photos' own crops, paired by seed
    assert fids[TEXT, 1.0] > 0.01 and fids[TEXT, 1.0] == fids[TEXT, 2.0]  # the same noise at each scale
    assert record["examples"]["photos"].shape == (6, 3, 24, 24) and record["examples"]["photos"].dtype == torch.uint8
    assert [t["text"] for t in record["texts"]] == ["ball"] * 6


def doc_commands(launched: bool = True) -> list[list[str]]:
    """The argv of every `dediffusion` command in docs/coco.md's bash blocks, in order (with `launched`, also
    those started by `accelerate launch ... -m dediffusion`)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["dediffusion"] or launched and words[:1] == ["accelerate"] and "dediffusion" in words:
                commands.append(words[words.index("dediffusion") + 1 :])
    return commands


def test_the_documented_commands_parse_and_train_against_sd2_base():
    commands = doc_commands()
    assert [c[0] for c in doc_commands(launched=False)] == ["train", "evaluate-coco"]
    for argv in commands:
        build_parser().parse_args(argv)  # exits (fails the test) on an unknown flag or a bad value
    assert all(c[c.index("--preset") + 1] == "sd2-base" for c in commands if c[0] == "train")
    preset = Path(fid.__file__).parents[1] / "presets" / "sd2-base.yaml"
    assert "path: stabilityai/stable-diffusion-2-base" in preset.read_text()


def test_the_recipe_trains_against_sd_and_reports_fid_of_text_and_captions(coco, sd_dir, tmp_path, monkeypatch):  # noqa: F811
    """docs/coco.md's commands as written, in its folder layout, plus TINY's flags and the tiny SD pipeline
    in place of SD 2-base."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").symlink_to(coco)
    monkeypatch.setattr(fid, "inception_v3", lambda device="cpu": TinyFeatures().to(device))
    train, evaluate = doc_commands(launched=False)
    assert main([*train, "--decoder", str(sd_dir), *TINY["train"]]) == 0
    assert main([*evaluate, *TINY["evaluate-coco"]]) == 0
    out = Path(evaluate[evaluate.index("-o") + 1])
    record = json.loads((out / "report.json").read_text())
    rows = [(r["source"], r["guidance_scale"]) for r in record["rows"]]
    assert rows == [(TEXT, 1), (CAPTION, 1), (TEXT, 3), (CAPTION, 3)]
    assert all(math.isfinite(r["fid"]) and r["fid"] >= 0 and r["num_images"] == 5 for r in record["rows"])
    assert record["pipeline"] == str(sd_dir) and record["captions_file"].endswith("captions_val2014.json")
    assert record["command"].startswith("dediffusion evaluate-coco") and record["machine"]["device"] == "cpu"
    assert record["date"] and record["settings"]["resolution"] == 32 and record["feature_network"] == "TinyFeatures"
    texts = [json.loads(line) for line in (out / "texts.jsonl").read_text().splitlines()]
    assert len(texts) == 5 and all(t["text"] and t["caption"].startswith("a ") for t in texts)
    markdown = (out / "report.md").read_text()
    assert f"| guidance scale | {TEXT} | {CAPTION} |" in markdown and "| 3 |" in markdown
    assert (out / "examples.png").is_file()


def test_photos_without_captions_are_one_clear_line(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fid, "inception_v3", lambda device="cpu": TinyFeatures())
    photo(0).save(tmp_path / "a.jpg")
    assert main(["evaluate-coco", str(tmp_path), "--encoder", "bundled:world_encoder", "-o", str(tmp_path / "o")]) == 2
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "no captions for the images in" in line and "--captions FILE" in line and "captions.jsonl" in line


def test_fewer_than_two_readable_photos_is_a_clear_error(tmp_path):
    photo(0).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    lines = [{"file_name": name, "caption": "a ball"} for name in ("a.png", "b.png")]
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(CaptionsError, match="FID needs at least 2 readable captioned photos; 1 of 2"):
        run_coco_fid(WordEncoder(), None, CocoSettings(str(tmp_path)), TinyFeatures())


class OfflineInception:
    def __init__(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_inception_weights_that_cannot_be_loaded_offline_are_one_clear_line(coco, tmp_path, caplog, monkeypatch):
    import torchmetrics.image.fid

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", OfflineInception)
    argv = ["evaluate-coco", str(coco / "val2014"), "--encoder", "bundled:world_encoder", "-o", str(tmp_path / "o")]
    assert main(argv) == 2 and not (tmp_path / "o").exists()
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert fid.INCEPTION_WEIGHTS in line and "run once with a network, or set TORCH_HOME" in line


def test_missing_fid_packages_are_named_with_the_install_command(monkeypatch):
    import torchmetrics.image.fid

    def without_torch_fidelity(*args, **kwargs):
        raise ModuleNotFoundError("NoTrainInceptionV3 module requires that `Torch-fidelity` is installed.")

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", without_torch_fidelity)
    with pytest.raises(fid.FIDUnavailableError, match=r"needs torch-fidelity .*pip install 'dediffusion\[coco\]'"):
        fid.inception_v3()
    monkeypatch.setitem(__import__("sys").modules, "torchmetrics.image.fid", None)
    with pytest.raises(fid.FIDUnavailableError, match=r"FID needs torchmetrics: pip install 'dediffusion\[coco\]'"):
        fid.frechet_inception_distance(TinyFeatures())


@pytest.mark.slow
def test_the_fid_inception_scores_the_photos_against_themselves_as_zero(coco):
    """With the real FID Inception (weights downloaded once, or in TORCH_HOME): photos against themselves."""
    try:
        network = fid.inception_v3()
    except fid.FIDUnavailableError as error:
        pytest.skip(str(error))
    settings = CocoSettings(str(coco / "val2014"), resolution=64, guidance_scales=(1.0,), batch_size=6)
    record = run_coco_fid(WordEncoder(), PhotoTarget(captioned_images(coco / "val2014")), settings, network)
    assert record["rows"][1]["source"] == CAPTION and abs(record["rows"][1]["fid"]) < 1e-2
