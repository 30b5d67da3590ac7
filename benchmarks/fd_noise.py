"""How far apart two prompt sources' FD-EffNet must be to mean something: bootstrap over test scenes.

For the first `--scenes` test scenes, a decoder (default: decoder B, which no training used) redraws
each scene from each prompt source at its guidance (`--sources NAME@G ...`; names: De-Diffusion,
human, description, empty). The real images and every source's redraws are resampled together
(`--resamples` bootstrap draws of the scenes, the same draw for every source), and each draw's
FD-EffNet is computed again. The table gives each source's FD-EffNet on all scenes, the bootstrap
spread, the objects per image the perception model reads, and each source's FD difference from the
first source with its bootstrap spread (paired: one draw of scenes for both sides).

usage: python benchmarks/fd_noise.py [--decoder bundled:decoder_b] [--scenes 200] [--resamples 50]
       [--sources De-Diffusion@4 human@1 description@1 empty@1] [--name fd_noise] [--threads N]
Writes benchmarks/results/NAME.{md,json}.
"""

import numpy as np
import torch
from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results

from dediffusion import DeDiffusion
from dediffusion.eval.frechet import EffNetFeatures, feature_statistics, frechet_distance
from dediffusion.eval.reconstruction import generate_from_prompts
from dediffusion.eval.scene_accuracy import objects_per_image, scene_accuracy
from dediffusion.eval.suite import resolve_draw_dtype
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, human_caption, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel


def texts_of(name: str, scenes, model: DeDiffusion, real: torch.Tensor) -> list[str]:
    if name == "De-Diffusion":
        return model.encode(real)
    makers = {"human": human_caption, "description": describe, "empty": lambda scene: ""}
    if name not in makers:
        raise SystemExit(f"unknown source {name!r}: use De-Diffusion, human, description or empty")
    return [makers[name](scene) for scene in scenes]


def fd(real: np.ndarray, redrawn: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(redrawn))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--decoder", default="bundled:decoder_b")
    parser.add_argument("--model", default="bundled:world_encoder")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--resamples", type=int, default=50)
    parser.add_argument("--sources", nargs="+", default=["De-Diffusion@4", "human@1", "description@1", "empty@1"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--name", default="fd_noise")
    args = parse_args(parser)
    scenes = test_scenes(args.scenes)
    real = render_batch(scenes)
    model = DeDiffusion.from_pretrained(args.model).eval()
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    read, features, dtype = PerceptionModel.load().predict, EffNetFeatures(), resolve_draw_dtype("auto")
    real_features = features(real).numpy()
    draws = [np.random.default_rng(k).integers(0, len(scenes), len(scenes)) for k in range(args.resamples)]
    rows, boots = [], {}
    for source in args.sources:
        name, _, guidance = source.partition("@")
        images = generate_from_prompts(decoder, texts_of(name, scenes, model, real), float(guidance or 1), args.steps,
                                       dtype=dtype)  # fmt: skip
        redrawn = features(images).numpy()
        readings = read(images)
        boots[source] = np.array([fd(real_features[d], redrawn[d]) for d in draws])
        rows.append({
            "source": source,
            "fd_effnet": fd(real_features, redrawn),
            "bootstrap_sd": float(boots[source].std()),
            "scene_accuracy": scene_accuracy(scenes, readings),
            "objects_per_image": objects_per_image(readings),
        })  # fmt: skip
        print(rows[-1], flush=True)
    first = args.sources[0]
    for row in rows:
        difference = boots[row["source"]] - boots[first]
        row["difference_from_first"] = row["fd_effnet"] - rows[0]["fd_effnet"]
        row["difference_sd"] = float(difference.std())
    record = {**provenance(), "decoder": args.decoder, "model": args.model, "scenes": args.scenes,
              "resamples": args.resamples, "draw_dtype": str(dtype).removeprefix("torch."),
              "objects_per_image_real": objects_per_image(scenes), "rows": rows}  # fmt: skip
    write_results(args.out, args.name, record, to_markdown(record))


def to_markdown(record: dict) -> str:
    first = record["rows"][0]["source"]
    lines = [
        f"# FD-EffNet and its bootstrap spread (`{record['decoder']}`, {record['scenes']} test scenes, "
        f"{record['resamples']} resamples)",
        "",
        f"| source@guidance | FD-EffNet | bootstrap sd | FD minus {first}'s (sd) | scene accuracy "
        "| objects per image |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['source']} | {r['fd_effnet']:.2f} | {r['bootstrap_sd']:.2f} | "
            f"{r['difference_from_first']:+.2f} ({r['difference_sd']:.2f}) | {100 * r['scene_accuracy']:.1f}% | "
            f"{r['objects_per_image']:.2f} |"
        )
    lines += ["", f"The test images hold {record['objects_per_image_real']:.2f} objects per image; redraws in "
              f"{record['draw_dtype']}, image i with seed i."]  # fmt: skip
    return "\n".join(lines + provenance_lines(record))


if __name__ == "__main__":
    main()
