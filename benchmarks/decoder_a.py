"""How well decoder A draws test scenes: scene accuracy of generated images read by the perception model.

Generates from the first test scenes' full descriptions, human captions and the empty prompt over a
guidance-scale sweep (fixed seeds), re-scores the best scale for descriptions on more scenes, writes
JSON plus a Markdown table beside it (same name, ``.md``) and a PNG grid original | description |
generated (same name, ``_samples.png``), with the command, machine, date and training record.

    python benchmarks/decoder_a.py --out benchmarks/results/decoder_a.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from dediffusion.eval.grid import save_grid
from dediffusion.eval.scene_accuracy import accuracy_by_kind, scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.decoders import default_decoder_path, generate_for_scenes
from dediffusion.world.perception import PerceptionModel


def score(decoder, perception, scenes, prompts_from, guidance_scale, steps) -> dict:
    start = time.perf_counter()
    images = generate_for_scenes(decoder, scenes, prompts_from, guidance_scale, steps)
    seconds = time.perf_counter() - start
    predictions = [p for chunk in images.split(256) for p in perception.predict(chunk)]
    return {
        "prompts_from": prompts_from,
        "guidance_scale": guidance_scale,
        "num_scenes": len(scenes),
        "scene_accuracy": scene_accuracy(scenes, predictions),
        "accuracy_by_kind": accuracy_by_kind(scenes, predictions),
        "images_per_s": round(len(scenes) / seconds, 1),
    }


def sweep(decoder, perception, args) -> list[dict]:
    scenes = test_scenes(args.sweep_scenes)
    rows = [score(decoder, perception, scenes, "empty", 1.0, args.num_inference_steps)]
    for source in ("description", "human"):
        for scale in args.guidance_scales:
            rows.append(score(decoder, perception, scenes, source, scale, args.num_inference_steps))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def write_markdown(path: Path, result: dict) -> None:
    best = result["best"]
    lines = [
        f"# Decoder A: scene accuracy of generated test scenes ({best['num_scenes']} scenes)",
        "",
        f"Full description, guidance {best['guidance_scale']}: **{best['scene_accuracy']:.2%}** "
        f"(by kind: {', '.join(f'{k} {v:.1%}' for k, v in best['accuracy_by_kind'].items())})",
        "",
        f"Sweep on the first {result['sweep'][0]['num_scenes']} test scenes "
        f"(DDIM {result['num_inference_steps']} steps, fixed seeds):",
        "",
        "| prompt | guidance | scene accuracy | shape | color | size | position | background |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["sweep"]:
        kinds = row["accuracy_by_kind"]
        lines.append(
            f"| {row['prompts_from']} | {row['guidance_scale']} | {row['scene_accuracy']:.2%} | "
            + " | ".join(f"{kinds[k]:.1%}" for k in ("shape", "color", "size", "position", "background"))
            + " |"
        )
    training = result["training"]
    lines += [
        "",
        f"- eval command: `{result['command']}`",
        f"- training command: `{training.get('command')}`",
        f"- training wall time: {training.get('wall_time_s')} s (torch threads: {training.get('torch_threads')})",
        f"- training settings: {training.get('settings')}",
        f"- decoder: `{result['decoder']}`, {result['size_mb']:.2f} MB",
        f"- machine: {result['machine']}",
        f"- date: {result['date']}",
        "",
        "Scene accuracy is the perception model's reading of the generated image against the true scene "
        "graph (see eval/scene_accuracy.py); the perception model reads real test images at 100%.",
    ]
    path.write_text("\n".join(lines) + "\n")


def save_samples(decoder, path: Path, guidance_scale: float, steps: int, n: int = 8) -> None:
    scenes = test_scenes(n)
    generated = generate_for_scenes(decoder, scenes, "description", guidance_scale, steps)
    headers = ["original", "full description", "generated"]
    save_grid(path, render_batch(scenes), [describe(s) for s in scenes], [generated], headers)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decoder", default=str(default_decoder_path()))
    parser.add_argument("--out", default="benchmarks/results/decoder_a.json")
    parser.add_argument("--sweep-scenes", type=int, default=200)
    parser.add_argument("--num-scenes", type=int, default=1000)
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    parser.add_argument("--num-inference-steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    decoder, perception = TextToImageDecoder.from_pretrained(args.decoder), PerceptionModel.load()
    rows = sweep(decoder, perception, args)
    best_scale = max((r for r in rows if r["prompts_from"] == "description"), key=lambda r: r["scene_accuracy"])
    scenes = test_scenes(args.num_scenes)
    best = score(decoder, perception, scenes, "description", best_scale["guidance_scale"], args.num_inference_steps)
    out = Path(args.out)
    save_samples(decoder, out.with_name(out.stem + "_samples.png"), best["guidance_scale"], args.num_inference_steps)
    folder = Path(args.decoder)
    result = {
        "best": best,
        "sweep": rows,
        "num_inference_steps": args.num_inference_steps,
        "decoder": args.decoder,
        "size_mb": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6,
        "training": json.loads((folder / "training.json").read_text()),
        "command": " ".join(["python", "benchmarks/decoder_a.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": f"{platform.machine()}, {platform.platform()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(out.with_suffix(".md"), result)
    return result


if __name__ == "__main__":
    main()
