import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_ENCODER, TINY_TRAIN
from safetensors.torch import load_file

from dediffusion.cli import main
from dediffusion.train.loop import NonFiniteLossError, train


def train_args(decoder_dir, data, out, steps, *extra):
    sets = [
        f"decoder.path={decoder_dir}",
        f"train.data={data}",
        f"train.steps={steps}",
        *TINY_ENCODER,
        *TINY_TRAIN,
    ]
    return ["train", "-o", str(out), *[a for s in sets for a in ("--set", s)], *extra]


def weights(folder: Path) -> dict:
    return load_file(Path(folder) / "model.safetensors")


def test_train_writes_metrics_checkpoints_and_final_model(micro_decoder_dir, quadrant_folder, tmp_path):
    args = train_args(micro_decoder_dir, quadrant_folder, tmp_path / "run", 5, "--set", "train.sample_every=5")
    assert main(args) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in records)
    assert records[0]["temperature"] > records[-1]["temperature"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]
    assert (run / "config.yaml").is_file() and (run / "final" / "model.safetensors").is_file()
    assert (run / "samples" / "step-00000005.png").is_file()
    assert not list(run.glob("**/.*tmp*"))
    record = json.loads((run / "final" / "training.json").read_text())
    assert record["command"] == " ".join(["dediffusion", *args]) and record["steps"] == 5
    assert record["wall_time_s"] > 0 and record["resumed_from_step"] == 0


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_run(micro_decoder_dir, quadrant_folder, tmp_path):
    steps = 12
    assert main(train_args(micro_decoder_dir, quadrant_folder, tmp_path / "straight", steps)) == 0
    interrupted = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "dediffusion",
        *train_args(micro_decoder_dir, quadrant_folder, interrupted, steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same thread count as this process: same float sums
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    first = interrupted / "checkpoints" / "step-00000002"
    deadline = time.time() + 120
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists() and not (interrupted / "final").exists(), "the run must be killed mid-way"
    assert main(train_args(micro_decoder_dir, quadrant_folder, interrupted, steps, "--resume", "latest")) == 0
    straight, resumed = weights(tmp_path / "straight" / "final"), weights(interrupted / "final")
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, different  # bitwise on the CPU
    steps_logged = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps_logged == list(range(1, steps + 1))
    assert json.loads((interrupted / "final" / "training.json").read_text())["resumed_from_step"] >= 2


def test_two_processes_match_one_process_on_the_same_global_batch(micro_decoder_dir, quadrant_folder, tmp_path):
    assert main(train_args(micro_decoder_dir, quadrant_folder, tmp_path / "one", 4)) == 0
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "dediffusion",
        *train_args(micro_decoder_dir, quadrant_folder, tmp_path / "two", 4),
        "--cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst < 1e-4, worst  # same batches and noise; only gradient summation order differs


def test_nan_loss_stops_before_the_update_and_keeps_the_last_good_checkpoint(
    micro_decoder_dir, quadrant_folder, tmp_path, monkeypatch
):
    from conftest import tiny_config

    from dediffusion.models.dediffusion import DeDiffusion

    original, calls = DeDiffusion.forward, []

    def poisoned(self, images, seeds, step=0):
        out = original(self, images, seeds, step)
        calls.append(step)
        if step >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DeDiffusion, "forward", poisoned)
    config = tiny_config(str(micro_decoder_dir), str(quadrant_folder), "train.steps=8")
    with pytest.raises(NonFiniteLossError, match="wake step 4/8.*step-00000002.*--resume latest"):
        train(config, tmp_path / "run")
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000002"] and calls[-1] == 3
    assert all(
        torch.isfinite(v.float()).all() for v in weights(tmp_path / "run" / "checkpoints" / checkpoints[0]).values()
    )


def test_unreadable_training_images_are_skipped_and_reported(micro_decoder_dir, quadrant_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(quadrant_folder, data)
    (data / "a" / "broken.png").write_bytes(b"not an image")
    assert main(train_args(micro_decoder_dir, data, tmp_path / "run", 3, "--set", "train.batch_size=9")) == 0
    reported = [json.loads(line) for line in (tmp_path / "run" / "bad_files.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in reported] == ["broken.png"]


def test_empty_image_folder_is_a_clear_error(micro_decoder_dir, tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    assert main(train_args(micro_decoder_dir, tmp_path / "empty", tmp_path / "run", 2)) == 2
    assert "no images found" in caplog.text.lower() and "empty" in caplog.text


def test_resuming_with_a_changed_config_is_refused(micro_decoder_dir, quadrant_folder, tmp_path, caplog):
    assert main(train_args(micro_decoder_dir, quadrant_folder, tmp_path / "run", 2)) == 0
    changed = train_args(
        micro_decoder_dir,
        quadrant_folder,
        tmp_path / "run",
        2,
        "--resume",
        "latest",
        "--set",
        "encoder.width=64",
    )
    assert main(changed) == 2 and "encoder.width" in caplog.text
    assert main(train_args(micro_decoder_dir, quadrant_folder, tmp_path / "run", 2)) == 2  # no silent overwrite
    assert "--resume latest" in caplog.text
