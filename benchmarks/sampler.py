"""How well a decoder draws from full descriptions under each DDIM timestep spacing, step count and
drawing precision: scene accuracy of the redraws (read by the perception model), their FD-EffNet
against the real test images, and drawing time.

"leading" is the diffusers schedulers' default spacing: its first step lies T / steps below the last
training timestep, where sampling starts from pure noise. "trailing" starts there (Lin et al., 2023).
`TextToImageDecoder.generate` uses the scheduler config's spacing unless told otherwise; the sleep
phase draws its texts with `sleep.timestep_spacing` ("trailing" in the world preset).

usage: python benchmarks/sampler.py [--decoder bundled:decoder_a] [--scenes 200] [--guidance-scale 3]
       [--settings SPACING:STEPS:DTYPE ...] [--name sampler]
Writes benchmarks/results/NAME.{md,json}.
"""

import argparse
import time
from pathlib import Path

import torch
from record import provenance, provenance_lines, write_results  # the script's folder is on sys.path

from dediffusion.eval.frechet import EffNetFeatures, feature_statistics, frechet_distance
from dediffusion.eval.scene_accuracy import scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel

SETTINGS = [  # spacing:steps:dtype
    "leading:5:float32",
    "leading:10:float32",
    "leading:20:float32",
    "trailing:5:float32",
    "trailing:10:float32",
    "trailing:20:float32",
    "trailing:5:bfloat16",
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
        "| spacing | steps | dtype | scene accuracy | FD-EffNet | s per 100 images |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        fd = f"{r['fd_effnet']:.2f}" if "fd_effnet" in r else "-"
        accuracy, seconds = f"{r['scene_accuracy']:.1%}", f"{r['seconds_per_100']:.2f}"
        lines.append(f"| {r['spacing']} | {r['steps']} | {r['dtype']} | {accuracy} | {fd} | {seconds} |")
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder", default="bundled:decoder_a")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--settings", nargs="+", default=SETTINGS, help="spacing:steps:dtype, e.g. trailing:20:float32")
    parser.add_argument("--name", default="sampler")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    perception, features = PerceptionModel.load(), EffNetFeatures()
    scenes = test_scenes(args.scenes)
    prompts = [describe(s) for s in scenes]
    real = feature_statistics(features(render_batch(scenes)))
    results = []
    for setting in args.settings:
        spacing, steps, dtype = setting.split(":")
        start = time.perf_counter()
        images = draw(decoder, prompts, args.guidance_scale, spacing, int(steps), dtype)
        seconds = time.perf_counter() - start
        accuracy = scene_accuracy(scenes, perception.predict(images))
        fd = frechet_distance(*real, *feature_statistics(features(images)))
        results.append({"spacing": spacing, "steps": int(steps), "dtype": dtype, "scene_accuracy": accuracy,
                        "fd_effnet": fd, "seconds_per_100": 100 * seconds / len(prompts)})  # fmt: skip
        print(results[-1], flush=True)
    record = {
        "decoder": args.decoder, "scenes": args.scenes, "guidance_scale": args.guidance_scale,
        **provenance(), "results": results,
    }  # fmt: skip
    write_results(args.out, args.name, record, to_markdown(record))


if __name__ == "__main__":
    main()
