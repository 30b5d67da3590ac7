"""`dediffusion encode`, `reconstruct` and `ask`: a trained encoder applied to your images."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .common import Formatter, add_model_args, iterate_batches, load_model, report, write_output

logger = logging.getLogger("dediffusion")


def add_encode(commands) -> None:
    parser = commands.add_parser("encode", help="write the text for each image", formatter_class=Formatter)
    parser.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    add_model_args(parser)
    parser.add_argument("--output", "-o", default=None, help="output file (default: standard output)")
    parser.add_argument(
        "--format",
        choices=("jsonl", "text"),
        default="jsonl",
        help='jsonl: {"path", "text", "tokens"} per line; text: one text per line',
    )
    parser.add_argument(
        "--unique-words",
        action="store_true",
        help="write each word once and drop the filler word (the form for other text-to-image models)",
    )
    parser.set_defaults(handler=run_encode)


def run_encode(args) -> int:
    model, errors, lines = load_model(args), [], []
    for paths, images in iterate_batches(model, args.paths, args.batch_size, errors):
        tokens = model.encode_tokens(images)
        texts = model.texts_of(tokens, args.unique_words)
        for path, text, ids in zip(paths, texts, tokens.tolist()):
            record = {"path": str(path), "text": text, "tokens": ids}
            lines.append(json.dumps(record) if args.format == "jsonl" else text)
    write_output(args.output, "".join(line + "\n" for line in lines))
    return report(len(lines), errors)


def add_reconstruct(commands) -> None:
    parser = commands.add_parser("reconstruct", help="image -> text -> image grid", formatter_class=Formatter)
    parser.add_argument("paths", nargs="+", help="image files or folders")
    add_model_args(parser)
    parser.add_argument("--output", "-o", default="reconstruction.png", help="grid PNG to write")
    parser.add_argument("--max-images", type=int, default=16, help="at most this many images")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--num-inference-steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image's noise")
    parser.add_argument(
        "--pipeline",
        default=None,
        help="redraw with this diffusers text-to-image pipeline (folder or hub id; SD 1.x/2.x, SDXL, ...) from the "
        "text's unique words, cut to its tokenizer (default: the model's own decoder)",
    )
    parser.set_defaults(handler=run_reconstruct)


def run_reconstruct(args) -> int:
    from ..data.grid import save_grid

    model, errors = load_model(args), []
    first = next(iterate_batches(model, args.paths, args.max_images, errors), None)  # the first max_images
    if first is None:
        return report(0, errors)
    _, images = first
    seeds = range(args.seed, args.seed + len(images))
    if args.pipeline:
        texts, recon = reconstruct_with_pipeline(model, images, args, seeds)
    else:
        texts, recon = model.reconstruct(images, args.guidance_scale, args.num_inference_steps, seeds)
    save_grid(Path(args.output), images, texts, [recon], headers=["image", "text", "reconstruction"])
    sys.stdout.write("".join(text + "\n" for text in texts))
    logger.info("wrote %s", args.output)
    return report(len(texts), errors)


def reconstruct_with_pipeline(model, images, args, seeds):
    from ..models.pipelines import PipelineTarget

    target = PipelineTarget.from_pretrained(args.pipeline, device=args.device)
    texts = model.encode(images, unique_words=True)
    return texts, target.generate(texts, args.guidance_scale, args.num_inference_steps, seeds)


def add_ask(commands) -> None:
    parser = commands.add_parser(
        "ask", help="encode an image to text, then ask a text-only language model about it", formatter_class=Formatter
    )
    parser.add_argument("image", help="image file")
    parser.add_argument("question", help='the question, e.g. "what color is the circle?"')
    parser.add_argument("--choices", nargs="+", default=None, help="closed answer set (ranked, calibrated)")
    parser.add_argument("--model", default="bundled:world_encoder", help="De-Diffusion model folder")
    parser.add_argument("--decoder", default=None, help="decoder folder or hub id (default: the one the model records)")
    parser.add_argument("--llm", default="smollm2", help="'smollm2', a transformers model folder, or a server URL")
    parser.add_argument("--llm-model", default=None, help="model name on the --llm server (default: its first)")
    parser.add_argument(
        "--few-shot-file", default=None, help='JSONL of solved examples {"context","question","answer"}'
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.set_defaults(handler=run_ask)


def run_ask(args) -> int:
    from ..data.images import load_image
    from ..eval.qa import QAItem, answer_freely, answer_questions, load_examples
    from ..llm import load_llm

    model = load_model(args)
    text = model.encode(load_image(args.image, model.encoder.config.image_size)[None].to(model.device))[0]
    sys.stdout.write(f"text: {text}\n")
    examples = load_examples(args.few_shot_file) if args.few_shot_file else []
    lm = load_llm(args.llm, device=args.device, model=args.llm_model)
    if args.choices:
        answer = answer_questions(lm, [QAItem(text, args.question, tuple(args.choices))], examples)[0]
    else:
        answer = answer_freely(lm, text, args.question, examples)
    sys.stdout.write(f"answer: {answer}\n")
    return 0
