"""The encoder's text as written against its `unique_words` form, through each decoder.

For `--scenes` scenes of one split (`test`: the fixed test split; `validation`: the training stream
under compare_encoders.py's validation seed, for choosing), each decoder redraws every scene from the
encoder's text as written (`encode(images)`), from its unique-words form (`encode(images,
unique_words=True)`: each word once, the filler dropped), from the human-style caption and from the
full description. Image i uses seed i in every cell, guidance 1, 2 and 4 (1: none), 20 steps, redraws
in bfloat16 where the CPU computes it natively (as `dediffusion evaluate`). Each cell: scene accuracy,
FD-EffNet against the real images, and the objects per image the perception model reads in the redraws.

usage: python benchmarks/encoder_text_forms.py [--model bundled:world_encoder]
       [--decoders bundled:decoder_a bundled:decoder_b] [--split test|validation] [--scenes 200]
       [--name encoder_text_forms_SPLIT] [--threads N]
Writes benchmarks/results/NAME.{md,json}.
"""

from compare_encoders import VALIDATION_SEED  # the script's folder is on sys.path
from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results

from dediffusion import DeDiffusion
from dediffusion.eval.frechet import EffNetFeatures
from dediffusion.eval.reconstruction import best_over_sweep, score_prompt_sources
from dediffusion.eval.scene_accuracy import objects_per_image
from dediffusion.eval.suite import resolve_draw_dtype
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, human_caption, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel
from dediffusion.world.split import train_scenes

SCALES, STEPS = (1.0, 2.0, 4.0), 20


def sources(model: DeDiffusion, scenes, images) -> dict[str, list[str]]:
    return {
        "as written": model.encode(images),
        "unique words": model.encode(images, unique_words=True),
        "human": [human_caption(s) for s in scenes],
        "description": [describe(s) for s in scenes],
    }


def to_markdown(record: dict) -> str:
    lines = [
        f"# The encoder's text forms ({record['scenes']} {record['split']} scenes, {STEPS} steps, "
        f"{record['draw_dtype']} redraws)",
        "",
        f"Encoder `{record['model']}`. Cells: scene accuracy / FD-EffNet / objects per image (the scenes hold "
        f"{record['objects_per_image']:.2f}); **best**: highest scene accuracy and lowest FD-EffNet over the "
        "sweep.",
    ]
    for decoder, result in record["decoders"].items():
        lines += [
            "",
            f"## `{decoder}`",
            "",
            "| text | " + " | ".join(f"guidance {s:g}" for s in SCALES) + " | best accuracy | best FD-EffNet |",
            "|---|" + "---|" * (len(SCALES) + 2),
        ]
        for source, by_scale in result["cells"].items():
            cells = [by_scale[str(s)] for s in SCALES]
            shown = [f"{c['scene_accuracy']:.1%} / {c['fd_effnet']:.1f} / {c['objects_per_image']:.2f}" for c in cells]
            best = result["best"][source]
            lines.append(
                f"| {source} | " + " | ".join(shown) + f" | {best['scene_accuracy']:.1%} | {best['fd_effnet']:.1f} |"
            )
    lines += ["", "Examples (first three scenes):", ""]
    for source, texts in record["examples"].items():
        lines += [f"- {source}: " + " // ".join(f"`{t}`" for t in texts)]
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="bundled:world_encoder")
    parser.add_argument("--decoders", nargs="+", default=["bundled:decoder_a", "bundled:decoder_b"])
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--draw-dtype", default="auto", help="float32, bfloat16 or auto (as dediffusion evaluate)")
    parser.add_argument("--name", default=None, help="results name (default: encoder_text_forms_SPLIT)")
    args = parse_args(parser)
    scenes = test_scenes(args.scenes) if args.split == "test" else train_scenes(args.scenes, seed=VALIDATION_SEED)
    images = render_batch(scenes)
    model = DeDiffusion.from_pretrained(args.model).eval()
    texts = sources(model, scenes, images)
    features, read, dtype = EffNetFeatures(), PerceptionModel.load().predict, resolve_draw_dtype(args.draw_dtype)
    decoders = {}
    for path in args.decoders:
        decoder = TextToImageDecoder.from_pretrained(path)
        cells = score_prompt_sources(decoder, texts, images, SCALES, STEPS, features, scenes, read, dtype=dtype)
        decoders[path] = {"cells": cells, "best": best_over_sweep(cells)}
        print(path, {k: (v["scene_accuracy"], v["fd_effnet"]) for k, v in decoders[path]["best"].items()}, flush=True)
    record = {
        "model": args.model, "split": args.split, "scenes": args.scenes, "draw_dtype": str(dtype).removeprefix("torch."),
        "objects_per_image": objects_per_image(scenes), **provenance(),
        "examples": {k: v[:3] for k, v in texts.items()}, "decoders": decoders,
    }  # fmt: skip
    write_results(args.out, args.name or f"encoder_text_forms_{args.split}", record, to_markdown(record))


if __name__ == "__main__":
    main()
