"""How well a decoder draws from full descriptions under each DDIM timestep spacing, step count and
drawing precision: scene accuracy of the redraws (read by the perception model) and drawing time.

"leading" is the diffusers schedulers' default spacing: its first step lies T / steps below the last
training timestep, where sampling starts from pure noise. "trailing" starts there (Lin et al., 2023).
`TextToImageDecoder.generate` uses "trailing"; the sleep phase draws its texts with it.

usage: python benchmarks/sampler.py [--decoder bundled:decoder_a] [--scenes 200] [--guidance-scale 3]
Writes benchmarks/results/sampler.{md,json}.
"""

import argparse
import time
from pathlib import Path

import torch
from record import provenance, provenance_lines, write_results  # the script's folder is on sys.path

from dediffusion.eval.scene_accuracy import scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, test_scenes
from dediffusion.world.perception import PerceptionModel

SETTINGS = [  # (spacing, steps, dtype)
    ("leading", 5, "float32"),
    ("leading", 10, "float32"),
    ("leading", 20, "float32"),
    ("trailing", 5, "float32"),
    ("trailing", 10, "float32"),
    ("trailing", 20, "float32"),
    ("trailing", 5, "bfloat16"),
]


def draw(decoder, prompts, guidance, spacing, steps, dtype, batch=100):
    images = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        with torch.autocast("cpu", dtype=getattr(torch, dtype), enabled=dtype != "float32"):
            images.append(decoder.generate(chunk, None, guidance, steps, generators, timestep_spacing=spacing).float())
    return torch.cat(images)


def to_markdown(record: dict) -> str:
    lines = [
        f"# Sampler settings: `{record['decoder']}` from full descriptions ({record['scenes']} test scenes, "
        f"guidance {record['guidance_scale']:g})",
        "",
        "| spacing | steps | dtype | scene accuracy | s per 100 images |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['spacing']} | {r['steps']} | {r['dtype']} | {r['scene_accuracy']:.1%} | {r['seconds_per_100']:.2f} |"
        for r in record["results"]
    ]
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder", default="bundled:decoder_a")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    perception = PerceptionModel.load()
    scenes = test_scenes(args.scenes)
    prompts = [describe(s) for s in scenes]
    results = []
    for spacing, steps, dtype in SETTINGS:
        start = time.perf_counter()
        images = draw(decoder, prompts, args.guidance_scale, spacing, steps, dtype)
        seconds = time.perf_counter() - start
        accuracy = scene_accuracy(scenes, perception.predict(images))
        results.append({"spacing": spacing, "steps": steps, "dtype": dtype, "scene_accuracy": accuracy,
                        "seconds_per_100": 100 * seconds / len(prompts)})  # fmt: skip
        print(results[-1], flush=True)
    record = {
        "decoder": args.decoder, "scenes": args.scenes, "guidance_scale": args.guidance_scale,
        **provenance(), "results": results,
    }  # fmt: skip
    write_results(args.out, "sampler", record, to_markdown(record))


if __name__ == "__main__":
    main()
