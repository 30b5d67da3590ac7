"""A cheap test of a decoder A training change: continue the bundled decoder A with it, then score.

Decoder A from scratch takes about 45 minutes on a CPU thread; a change to its UNet stage (the loss
weights under objects, the timestep distribution) shows in a short continuation of the bundled model
first. The continuation runs `pretrain_text_to_image` as `pretrain_decoder_a`'s stage 3 does (the
caption mixture, EMA, clipped AdamW with a cosine schedule) on a fresh slice of the training stream,
then generates from the full descriptions of the first test scenes at two guidance scales and scores
them with the perception model (scene accuracy and accuracy by fact kind).

usage: python benchmarks/continue_decoder.py --name NAME [--object-weight W] [--timestep-bias B]
       [--steps 600] [--scenes 200] [--threads N]
Adds NAME's row to benchmarks/results/continue_decoder.{md,json} (rows of other names are kept).
"""

import json
import time

from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion.eval.scene_accuracy import accuracy_by_kind, scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.train.pretrain import pretrain_text_to_image
from dediffusion.world.decoders import generate_for_scenes, world_sampler
from dediffusion.world.perception import PerceptionModel
from dediffusion.world.split import test_scenes

KINDS = ("background", "position", "shape", "color", "size")
GUIDANCE_SCALES = (3.0, 4.0)


def continue_and_score(args) -> dict:
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    sample = world_sampler(args.seed, p_full=0.5, p_loose=0.5, object_weight=args.object_weight)
    start = time.perf_counter()
    losses = pretrain_text_to_image(
        decoder, sample, args.steps, 64, args.learning_rate, args.seed, log_every=100, ema_decay=0.995,
        timestep_bias=args.timestep_bias,
    )  # fmt: skip
    row = {
        "name": args.name, "decoder": args.decoder, "steps": args.steps, "object_weight": args.object_weight,
        "timestep_bias": args.timestep_bias, "learning_rate": args.learning_rate, "seed": args.seed,
        "train_s": round(time.perf_counter() - start, 1), "final_loss": sum(losses[-50:]) / len(losses[-50:]),
    }  # fmt: skip
    scenes, perception = test_scenes(args.scenes), PerceptionModel.load()
    for guidance in GUIDANCE_SCALES:
        predictions = perception.predict(generate_for_scenes(decoder, scenes, "description", guidance))
        scores = {"scene_accuracy": scene_accuracy(scenes, predictions), **accuracy_by_kind(scenes, predictions)}
        row[f"g{guidance:g}"] = scores
        print(args.name, guidance, row[f"g{guidance:g}"], flush=True)
    if args.save:
        decoder.save_pretrained(args.save)
    return row


def to_markdown(record: dict) -> str:
    lines = [
        f"# Continuations of decoder A: scene accuracy from the full descriptions of {record['scenes']} test scenes",
        "",
        "Each row continues the bundled decoder A for `steps` UNet steps with one training change, then "
        "generates from descriptions (best of guidance " + " / ".join(f"{g:g}" for g in GUIDANCE_SCALES) + ").",
        "",
        "| name | steps | object weight | timestep bias | guidance | scene accuracy | " + " | ".join(KINDS) + " |",
        "|---" * (len(KINDS) + 6) + "|",
    ]
    for row in record["rows"]:
        guidance = max(GUIDANCE_SCALES, key=lambda g: row[f"g{g:g}"]["scene_accuracy"])
        best = row[f"g{guidance:g}"]
        lines.append(
            f"| {row['name']} | {row['steps']} | {row['object_weight']:g} | {row['timestep_bias']:g} | {guidance:g} | "
            f"{best['scene_accuracy']:.1%} | " + " | ".join(f"{best[k]:.1%}" for k in KINDS) + " |"
        )
    lines += ["", "Commands and dates per row:", ""]
    lines += [
        f"- {row['name']}: `{row['command']}` ({row['date']}, {row['train_s']:.0f} s of training)"
        for row in record["rows"]
    ]
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--name", required=True, help="the row's name (a rerun replaces it)")
    parser.add_argument("--decoder", default="bundled:decoder_a")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--object-weight", type=float, default=0.0)
    parser.add_argument("--timestep-bias", type=float, default=3.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=7, help="seeds the training slice, captions and noise")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--save", default=None, help="also save the continued decoder here")
    args = parse_args(parser)
    info = provenance()
    row = {**continue_and_score(args), "command": info["command"], "date": info["date"]}
    path = args.out / "continue_decoder.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = [r for r in rows if r["name"] != args.name] + [row]
    record = {"scenes": args.scenes, **info, "rows": rows}
    write_results(args.out, "continue_decoder", record, to_markdown(record))


if __name__ == "__main__":
    main()
