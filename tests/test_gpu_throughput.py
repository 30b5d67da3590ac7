"""benchmarks/gpu_throughput.py at toy size on the CPU: the same code path the GPU run takes (decoder built
from SD 2-base-shaped configs, the paper-sized encoder's training step), and the record it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_toy_run_writes_throughput_memory_and_provenance(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from gpu_throughput import SD2_BASE_UNET, TOY_UNET, main

    argv = ["--toy", "--device", "cpu", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--out", str(tmp_path)]
    record = main(argv)
    assert json.loads((tmp_path / "gpu_throughput-toy-cpu.json").read_text()) == record
    assert "images/s per GPU" in (tmp_path / "gpu_throughput-toy-cpu.md").read_text()
    assert record["images_per_s_per_gpu"] > 0 and len(record["step_s"]) == 2
    assert record["images_per_s_per_gpu"] == record["batch_size"] / record["step_s_median"]
    assert record["peak_memory_mb"] > 0 and record["device"].startswith("CPU")
    assert record["trainable_params"] > 0 and record["num_tokens"] == 75
    assert record["command"] == "python benchmarks/gpu_throughput.py " + " ".join(argv)
    assert {"machine", "date"} <= set(record) and record["goal_images_per_s"] == 74
    # the toy shrinks widths only: the same blocks as SD 2-base
    assert TOY_UNET["down_block_types"] == SD2_BASE_UNET["down_block_types"]
    sys.modules.pop("gpu_throughput", None)
