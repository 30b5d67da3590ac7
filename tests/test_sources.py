"""Data at scale (data/sources.py, data/shards.py, data/arrow.py): webdataset shards, parquet files and a
`datasets` folder, all written here from the quadrant test images, give the same pixels as the folder they
came from, train to the same weights (and resume mid-epoch to them, bitwise), encode to the same texts,
and every bad input is one line naming the file and what to do."""

import gzip
import io
import json
import shutil
import tarfile

import datasets
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from safetensors.torch import load_file

from dediffusion.cli import main
from dediffusion.data import shards as shards_module
from dediffusion.data.images import DataSourceError, ImageFolder, NoImagesError
from dediffusion.data.sources import expand_braces, open_source
from dediffusion.train.loop import train

KINDS = ["shards", "shard-files", "datasets", "parquet"]
FIRST_NAME = {"datasets": "data-00000-of-00001.arrow#0", "parquet": "train-00000.parquet#0"}  # else a shard's
# batch 3 over 8 images: the checkpoint after step 2 (position 6) lies mid-epoch; steps 3-4 run into epoch 2
TRAIN = ["train.steps=4", "train.batch_size=3", "train.keep_checkpoints=3"]


def write_shard(path, samples):
    """A webdataset shard: `samples` is a list of (key, {field: bytes}), written in that order."""
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for field, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def image_dataset(files):
    """A `datasets` Dataset of the files' own bytes (an Image() feature) and a caption column."""
    rows = {"image": [{"bytes": f.read_bytes(), "path": None} for f in files], "caption": [f.stem for f in files]}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def sets(quadrant_folder, tmp_path_factory):
    """The quadrant folder's 8 images as each kind of data, in the folder's order: name -> what --data takes."""
    files = ImageFolder(quadrant_folder, 8).paths
    root = tmp_path_factory.mktemp("sets")
    (root / "shards").mkdir()
    for s, first in enumerate(range(0, 8, 3)):  # 3 shards of 3, 3 and 2 samples
        samples = []
        for i in range(first, min(first + 3, 8)):
            fields = {"png": files[i].read_bytes(), "txt": b"a caption"}
            samples.append((f"{i:06d}", fields if i % 2 else dict(reversed(fields.items()))))  # either field first
        write_shard(root / "shards" / f"{s:06d}.tar", samples)
    image_dataset(files).save_to_disk(root / "saved")
    (root / "parquet").mkdir()
    image_dataset(files[:5]).to_parquet(root / "parquet" / "train-00000.parquet", batch_size=2)  # 3 row groups
    by_path = datasets.Dataset.from_dict({"image": [str(f) for f in files[5:]]}).cast_column("image", datasets.Image())
    by_path.to_parquet(root / "parquet" / "train-00001.parquet")  # cells that hold only a path to the image
    return {
        "folder": str(quadrant_folder),
        "shards": str(root / "shards" / "{000000..000002}.tar"),
        "shard-files": sorted(str(p) for p in (root / "shards").glob("*.tar")),  # as the shell expands a pattern
        "datasets": str(root / "saved"),
        "parquet": str(root / "parquet"),
    }


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEDIFFUSION_CACHE", str(tmp_path / "cache"))  # shard indices stay in the test's folder


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gives_the_folders_pixels_in_the_folders_order(sets, kind):
    folder, source = open_source(sets["folder"], 8), open_source(sets[kind], 8)
    assert len(source) == len(folder) == 8
    for i in range(8):
        assert torch.equal(source[i], folder[i]), i
    assert source.name(0).endswith(FIRST_NAME.get(kind, "000000.tar#000000.png"))


@pytest.fixture(scope="module")
def folder_run(sets, micro_decoder_dir, tmp_path_factory):
    """A 4-step run on the image folder: the weights every other kind must reach."""
    run_dir = tmp_path_factory.mktemp("runs") / "folder"
    return train(tiny_config(str(micro_decoder_dir), sets["folder"], *TRAIN), run_dir)


def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_same_weights(folder, other):
    expected, found = weights(folder), weights(other)
    assert not [k for k in expected if not torch.equal(expected[k], found[k])]  # bitwise on the CPU


@pytest.mark.parametrize("kind", ["shards", "datasets", "parquet"])
def test_a_run_on_each_kind_equals_the_folder_run_and_resumes_mid_epoch_to_it(
    sets, kind, folder_run, micro_decoder_dir, tmp_path
):
    config = tiny_config(str(micro_decoder_dir), sets[kind], *TRAIN)
    final = train(config, tmp_path / "run")
    assert_same_weights(folder_run, final)
    for name in ("final", "checkpoints/step-00000004"):
        shutil.rmtree(tmp_path / "run" / name)  # as if killed after the mid-epoch checkpoint of step 2
    resumed = train(config, tmp_path / "run", resume="latest")
    assert json.loads((resumed / "training.json").read_text())["resumed_from_step"] == 2
    assert_same_weights(folder_run, resumed)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def encode(data, encoder, out):
    args = [data] if isinstance(data, str) else data
    assert main(["encode", *args, "--encoder", str(encoder), "-o", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("kind", KINDS)
def test_encode_reads_each_kind_and_names_each_image(sets, kind, folder_run, tmp_path):
    expected = encode(sets["folder"], folder_run, tmp_path / "folder.jsonl")
    found = encode(sets[kind], folder_run, tmp_path / "found.jsonl")
    assert [r["text"] for r in found] == [r["text"] for r in expected]
    source = open_source(sets[kind], 8)
    assert [r["path"] for r in found] == [source.name(i) for i in range(8)]


# ---- bad input: one line naming the file and what to do --------------------------------------


def one_error_line(args, caplog) -> str:
    assert main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    return errors[0]


@pytest.fixture
def encode_args(folder_run):
    return lambda *data: ["encode", *map(str, data), "--encoder", str(folder_run)]


def good_shard(path, count=3):
    """`count` samples of a red 8x8 PNG and a caption."""
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    write_shard(path, [(f"{i:06d}", {"png": png.getvalue(), "txt": b"red"}) for i in range(count)])
    return path


def test_a_damaged_tar_header_is_an_error_not_a_shorter_shard(encode_args, tmp_path, caplog):
    shard = good_shard(tmp_path / "000000.tar")
    data = bytearray(shard.read_bytes())
    data[3 * 1024 + 10 : 3 * 1024 + 20] = b"z" * 10  # the fourth member's header: tarfile would stop there
    shard.write_bytes(bytes(data))
    message = one_error_line(encode_args(shard), caplog)
    assert str(shard) in message and "damaged tar header at byte 3072" in message and "again" in message


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda data: data[: data.index(b"IEND", data.index(b"000002.png"))], "truncated"),  # in a member
        (lambda data: data[: data.index(b"000002.txt")], "truncated"),  # between members
        (gzip.compress, "gzip-compressed"),
        (lambda data: b"this is not a tar file" * 40, "not a tar file"),
        (lambda data: b"", "empty"),
    ],
    ids=["truncated", "cut-between-members", "gzip", "not-a-tar", "empty"],
)
def test_an_unusable_shard_is_named_with_what_to_do(encode_args, tmp_path, caplog, damage, words):
    shard = good_shard(tmp_path / "000000.tar")
    shard.write_bytes(damage(shard.read_bytes()))
    message = one_error_line(encode_args(shard), caplog)
    assert f"cannot read '{shard}'" in message and words in message


def test_a_shard_without_images_says_which_fields_it_has(encode_args, tmp_path, caplog):
    shard = tmp_path / "000000.tar"
    write_shard(shard, [("000000", {"txt": b"red", "json": b"{}"})])
    message = one_error_line(encode_args(shard), caplog)
    assert str(shard) in message and "holds no images" in message and "json, txt" in message
    assert "KEY.jpg" in message


def test_a_damaged_image_in_a_good_shard_is_skipped_and_named(folder_run, tmp_path, caplog):
    shard = good_shard(tmp_path / "000000.tar")
    data = shard.read_bytes()
    start = data.index(b"\x89PNG", data.index(b"000001.png"))
    shard.write_bytes(data[:start] + b"garbage!" + data[start + 8 :])  # the PNG signature of sample 000001
    out = tmp_path / "texts.jsonl"
    assert main(["encode", str(shard), "--encoder", str(folder_run), "-o", str(out)]) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["path"] == f"{shard}#000001.png" and "not a recognised" in lines[-1]["error"]


def test_empty_sets_and_patterns_that_match_nothing_are_clear(encode_args, tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    message = one_error_line(encode_args(tmp_path / "empty"), caplog)
    assert "no images found" in message and "webdataset shards (.tar)" in message
    caplog.clear()
    assert "no files match" in one_error_line(encode_args(tmp_path / "*.tar"), caplog)
    caplog.clear()
    assert "does not exist" in one_error_line(encode_args(tmp_path / "{000000..000001}.tar"), caplog)
    with pytest.raises(NoImagesError):
        open_source(tmp_path / "empty", 8)
    (tmp_path / "empty" / "000000.tar.gz").write_bytes(gzip.compress(b"shard"))
    with pytest.raises(DataSourceError, match="000000.tar.gz': compressed shards cannot be read by index"):
        open_source(tmp_path / "empty", 8)


def test_parquet_without_an_image_column_names_its_columns(encode_args, tmp_path, caplog):
    datasets.Dataset.from_dict({"caption": ["red"], "label": [1]}).to_parquet(tmp_path / "texts.parquet")
    message = one_error_line(encode_args(tmp_path / "texts.parquet"), caplog)
    assert "no image column (columns: caption: string, label: int64)" in message and "Image()" in message


def test_mixed_kinds_urls_and_dataset_dicts_are_refused(sets, encode_args, tmp_path, caplog):
    mixed = one_error_line(encode_args(sets["folder"], sets["shard-files"][0]), caplog)
    assert "holds webdataset shards, but" in mixed and "one kind of data at a time" in mixed
    caplog.clear()
    assert "it is a URL" in one_error_line(encode_args("https://example.com/{000..009}.tar"), caplog)
    caplog.clear()
    splits = datasets.DatasetDict(train=datasets.Dataset.from_dict({"image": [b"x"]}))
    splits.save_to_disk(tmp_path / "dict")
    message = one_error_line(encode_args(tmp_path / "dict"), caplog)
    assert "DatasetDict with the splits train" in message and f"{tmp_path / 'dict' / 'train'}" in message


def test_training_on_a_bad_shard_stops_before_it_starts(micro_decoder_dir, tmp_path):
    shard = good_shard(tmp_path / "000000.tar")
    shard.write_bytes(shard.read_bytes()[:1500])
    with pytest.raises(DataSourceError, match="truncated"):
        train(tiny_config(str(micro_decoder_dir), str(shard)), tmp_path / "run")


# ---- the shard index ------------------------------------------------------------------------


def test_the_shard_index_is_cached_and_rebuilt_when_the_shard_changes(tmp_path, monkeypatch):
    shard = good_shard(tmp_path / "000000.tar")
    assert len(open_source(shard, 8)) == 3
    scan, scans = shards_module.scan_shard, []
    monkeypatch.setattr(shards_module, "scan_shard", lambda path: scans.append(path) or scan(path))
    assert len(open_source(shard, 8)) == 3 and not scans  # from the cache
    good_shard(shard, count=5)
    assert len(open_source(shard, 8)) == 5 and scans == [shard]


def test_braces_expand_like_the_shell_and_webdataset():
    assert expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("{x}.tar") == ["{x}.tar"]
