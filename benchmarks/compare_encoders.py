"""Several encoders side by side on their decoder: scene accuracy of the redraws of each encoder's text,
on validation scenes (the training stream under a seed no training run uses: for choosing between
encoders) and on the fixed test scenes (for reporting the chosen one).

usage: python benchmarks/compare_encoders.py MODEL [MODEL ...] [--validation 400] [--test 200] [--name NAME]
       [--decoder DECODER_DIR]   (one decoder for every model; default: each model's recorded decoder)
Writes benchmarks/results/NAME.{md,json} (default NAME: compare_encoders).
"""

import json
from pathlib import Path

from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion import DeDiffusion
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.sampling import generate_from_prompts
from dediffusion.world import render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel
from dediffusion.world.scoring import scene_accuracy
from dediffusion.world.split import train_scenes

VALIDATION_SEED = 424242  # `dediffusion world sample` and the tests use small seeds


def score(model, scenes, perception, guidance, steps) -> float:
    texts = model.encode(render_batch(scenes))
    images = generate_from_prompts(model.decoder, texts, guidance, steps)
    return scene_accuracy(scenes, [p for chunk in images.split(256) for p in perception.predict(chunk)])


def to_markdown(record: dict) -> str:
    decoder = f"`{record['decoder']}`" if record.get("decoder") else "A"
    lines = [
        f"# Encoders side by side (decoder {decoder}, guidance {record['guidance_scale']:g}, "
        f"{record['num_inference_steps']} steps)",
        "",
        f"| encoder | trained with | validation ({record['validation_scenes']} scenes) "
        f"| test ({record['test_scenes']}) |",
        "|---|---|---|---|",
    ]
    for r in record["results"]:
        cells = [f"{r[split]:.1%}" if split in r else "-" for split in ("validation", "test")]
        lines.append(f"| `{r['model']}` | `{r['trained_with']}` | {' | '.join(cells)} |")
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--validation", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--num-inference-steps", type=int, default=20)
    parser.add_argument("--decoder", default=None, help="score every model on this decoder instead of its own")
    parser.add_argument("--name", default="compare_encoders")
    args = parse_args(parser)
    perception = PerceptionModel.load()
    splits = {"validation": train_scenes(args.validation, seed=VALIDATION_SEED), "test": test_scenes(args.test)}
    splits = {split: scenes for split, scenes in splits.items() if scenes}  # --validation 0: test only
    decoder = TextToImageDecoder.from_pretrained(args.decoder) if args.decoder else None
    results = []
    for path in args.models:
        model = DeDiffusion.from_pretrained(path, decoder=decoder).eval()
        made_by = Path(path) / "training.json"
        trained_with = json.loads(made_by.read_text()).get("command", "") if made_by.is_file() else ""
        row = {"model": path, "trained_with": trained_with}
        for split, scenes in splits.items():
            row[split] = score(model, scenes, perception, args.guidance_scale, args.num_inference_steps)
        results.append(row)
        print(row, flush=True)
    record = {
        "guidance_scale": args.guidance_scale, "num_inference_steps": args.num_inference_steps,
        "decoder": args.decoder, "validation_scenes": args.validation, "validation_seed": VALIDATION_SEED,
        "test_scenes": args.test,
        **provenance(), "results": results,
    }  # fmt: skip
    write_results(args.out, args.name, record, to_markdown(record))


if __name__ == "__main__":
    main()
