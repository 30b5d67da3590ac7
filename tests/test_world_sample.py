"""write_samples: N PNGs plus one JSONL record per image."""

import json

import numpy as np
import pytest
from PIL import Image

from dediffusion.world import Scene, describe, render, write_samples
from dediffusion.world import test_scenes as fixed_test_scenes


def test_write_samples_writes_pngs_and_descriptions(tmp_path):
    paths = write_samples(5, tmp_path / "out", seed=3, size=32)
    assert [p.name for p in paths] == [f"{i:06d}.png" for i in range(5)]
    lines = (tmp_path / "out" / "descriptions.jsonl").read_text().splitlines()
    assert len(lines) == 5
    for path, line in zip(paths, lines, strict=True):
        record = json.loads(line)
        scene = Scene.from_dict(record["scene"])
        assert record["file"] == path.name and record["description"] == describe(scene)
        assert record["human_caption"] and record["questions"][0]["kind"] == "count"
        assert np.array_equal(np.asarray(Image.open(path)), render(scene, 32))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in paths] + ["descriptions.jsonl"]
    )  # no temporary files left behind


def test_write_samples_test_split_and_bad_arguments(tmp_path):
    write_samples(2, tmp_path, size=16, split="test")
    record = json.loads((tmp_path / "descriptions.jsonl").read_text().splitlines()[1])
    assert Scene.from_dict(record["scene"]) == fixed_test_scenes(2)[1]
    assert Image.open(tmp_path / "000001.png").size == (16, 16)
    with pytest.raises(ValueError, match="fixed seed"):
        write_samples(1, tmp_path, seed=1, split="test")
    with pytest.raises(ValueError, match="split"):
        write_samples(1, tmp_path, split="val")


def test_world_texts_describes_scenes_that_no_default_training_image_shows(tmp_path, caplog):
    from dediffusion.cli import main
    from dediffusion.world import train_scenes

    out = tmp_path / "texts.txt"
    assert main(["world", "texts", "-n", "5", "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines == [describe(scene) for scene in train_scenes(5, seed=1)]
    assert lines != [describe(scene) for scene in train_scenes(5, seed=0)]  # world sample's default seed
    assert main(["world", "texts", "-n", "5"]) == 2
    assert "needs a file to write: -o FILE" in caplog.text
