"""How well the world's perception model reads scene graphs from real (rendered) world images.

Evaluates perception weights on the fixed test split (first ``--num-scenes`` of ``test_scenes``) and
writes the numbers as JSON plus a Markdown table beside it (same name, ``.md``), with the command,
machine, date and how the weights were trained (from their ``config.json``).

    python benchmarks/perception_accuracy.py --weights src/dediffusion/assets/perception \\
        --out benchmarks/results/perception.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import machine

from dediffusion.world import render_batch, test_scenes
from dediffusion.world.perception import WEIGHTS_FILE, PerceptionModel, default_weights_path
from dediffusion.world.scoring import (
    FACT_KINDS,
    accuracy_by_kind,
    fact_accuracy,
    fact_precision,
    scene_accuracy,
)


def evaluate(model: PerceptionModel, num_scenes: int, batch_size: int) -> dict:
    """Scene accuracy, per-kind accuracy and precision of ``model`` on the first test scenes."""
    scenes = test_scenes(num_scenes)
    start = time.perf_counter()
    predictions = []
    for i in range(0, num_scenes, batch_size):
        predictions += model.predict(render_batch(scenes[i : i + batch_size]))
    seconds = time.perf_counter() - start
    return {
        "num_scenes": num_scenes,
        "scene_accuracy": scene_accuracy(scenes, predictions),
        "accuracy_by_kind": accuracy_by_kind(scenes, predictions),
        "fact_precision": sum(map(fact_precision, scenes, predictions)) / num_scenes,
        "perfect_scenes": sum(map(_perfect, scenes, predictions)) / num_scenes,
        "eval_wall_time_s": round(seconds, 2),
        "images_per_s": round(num_scenes / seconds, 1),
    }


# Nuisances a reconstruction may have and a rendered scene does not; a reader should see through them.
PERTURBATIONS = {
    "gaussian noise, std 0.1": lambda x, g: (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
    "gaussian noise, std 0.2": lambda x, g: (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
    "3x3 box blur": lambda x, g: F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1),
    "down to 16 px and up": lambda x, g: F.interpolate(F.interpolate(x, 16, mode="area"), 32, mode="bilinear"),
}


def evaluate_perturbed(model: PerceptionModel, num_scenes: int, batch_size: int) -> dict:
    """Per perturbation, accuracy by fact kind on the same test scenes (fixed noise seed)."""
    scenes = test_scenes(num_scenes)
    images = torch.cat([render_batch(scenes[i : i + batch_size]) for i in range(0, num_scenes, batch_size)])
    results = {}
    for name, perturb in PERTURBATIONS.items():
        perturbed = perturb(images, torch.Generator().manual_seed(0))
        predictions = [p for chunk in perturbed.split(batch_size) for p in model.predict(chunk)]
        results[name] = accuracy_by_kind(scenes, predictions)
    return results


def _perfect(scene, prediction) -> bool:
    return fact_accuracy(scene, prediction) == 1.0


def to_markdown(record: dict) -> str:
    result, training = record["result"], record["weights"]["metadata"]
    rows = [("scene accuracy (mean per-scene fact accuracy)", result["scene_accuracy"])]
    rows += [(f"{kind} facts", result["accuracy_by_kind"][kind]) for kind in (*FACT_KINDS, "all")]
    rows += [
        ("fact precision", result["fact_precision"]),
        ("scenes read perfectly", result["perfect_scenes"]),
    ]
    kinds = (*FACT_KINDS, "all")
    perturbed = [
        f"| {name} | " + " | ".join(f"{100 * accuracy[k]:.1f}%" for k in kinds) + " |"
        for name, accuracy in record["perturbed"].items()
    ]
    lines = [
        f"# Perception accuracy on the test split ({result['num_scenes']} scenes)",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {100 * value:.2f}% |" for name, value in rows),
        "",
        "Accuracy by fact kind under perturbations of the same test images:",
        "",
        "| perturbation | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
        *perturbed,
        "",
        f"- eval command: `{record['command']}`",
        f"- eval: {result['eval_wall_time_s']} s, {result['images_per_s']} images/s",
        f"- training command: `{training.get('command', 'unknown')}`",
        f"- training wall time: {training.get('command_wall_time_s', 'unknown')} s "
        f"(torch threads: {training.get('torch_threads', '?')}); settings {training.get('train')}",
        f"- weights: `{record['weights']['path']}`, {record['weights']['bytes'] / 1e6:.2f} MB",
        f"- machine: {record['machine']['processor']}, {record['machine']['uname']}; "
        f"torch {record['machine']['torch']}, {record['machine']['torch_threads']} threads",
        f"- date: {record['date']}",
        "",
        "Position facts count each hallucinated object as one wrong fact (see eval/scene_accuracy.py).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: bundled)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/perception.json"))
    parser.add_argument("--num-scenes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    args = parser.parse_args(argv)
    model = PerceptionModel.load(args.weights)
    weights = args.weights or default_weights_path()
    record = {
        "benchmark": "perception_accuracy",
        "command": " ".join(["python benchmarks/perception_accuracy.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "weights": {
            "path": str(weights),
            "bytes": (weights / WEIGHTS_FILE).stat().st_size,
            "metadata": model.metadata,
        },
        "result": evaluate(model, args.num_scenes, args.batch_size),
        "perturbed": evaluate_perturbed(model, args.num_scenes, args.batch_size),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(record))
    return record


if __name__ == "__main__":
    main()
