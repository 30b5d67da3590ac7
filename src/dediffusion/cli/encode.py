"""`dediffusion encode`, `reconstruct` and `ask`: a trained encoder applied to your images."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .common import (
    add_command,
    add_decoder_arg,
    add_encoder_arg,
    add_image_args,
    add_output_arg,
    add_runtime_args,
    add_sampling_args,
    iterate_batches,
    load_model,
    non_negative_int,
    positive_int,
    report,
    set_threads,
    write_output,
)

logger = logging.getLogger("dediffusion")


def add_encode(commands) -> None:
    parser = add_command(
        commands,
        "encode",
        "write the text the encoder reads in each image",
        "dediffusion encode my-images/ --encoder bundled:world_encoder -o texts.jsonl",
        "Write the text the encoder reads in each image: one JSON line per image with its path, text and token "
        "ids (a file that cannot be read gets a line with its path and the error).",
    )
    add_image_args(parser)
    add_encoder_arg(parser)
    add_decoder_arg(parser)
    add_output_arg(parser, None, "file to write (default: standard output)")
    parser.add_argument(
        "--format",
        choices=("jsonl", "text"),
        default="jsonl",
        help='jsonl: {"path", "text", "tokens"} per line; text: "path<TAB>text" per line',
    )
    parser.add_argument(
        "--unique-words",
        action="store_true",
        help="write each word once and drop the filler word (the form for other text-to-image models)",
    )
    parser.add_argument(
        "--refine",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="improve each text by N rounds of one-word swaps scored by the decoder's own loss (loads the decoder; "
        "each round costs about 36 decoder passes per image)",
    )
    add_runtime_args(parser, batch_size=64, seed=True)
    parser.set_defaults(handler=run_encode)


def run_encode(args) -> int:
    set_threads(args)
    model, errors, lines, done = load_model(args), [], [], 0
    for paths, images in iterate_batches(model, args, errors):
        tokens = refined(model, images, args, args.seed + done) if args.refine else model.encode_tokens(images)
        done += len(paths)
        texts = model.texts_of(tokens, args.unique_words)
        for path, text, ids in zip(paths, texts, tokens.tolist()):
            record = {"path": str(path), "text": text, "tokens": ids}
            lines.append(json.dumps(record) if args.format == "jsonl" else f"{path}\t{text}")
    if args.format == "jsonl":
        lines += [json.dumps({"path": str(error.path), "error": str(error)}) for error in errors]
    write_output(args.output, "".join(line + "\n" for line in lines))
    if args.output not in (None, "-"):
        logger.info("wrote %s", args.output)
    return report(done, errors)


def refined(model, images, args, seed: int):
    """The encoder's token ids refined for `--refine` rounds against the decoder's loss (models/refine.py);
    image i of the batch is scored on noise from seed `seed + i`, so results do not depend on --batch-size."""
    from ..models.refine import refine_tokens

    allowed = model.vocab_mask.nonzero().squeeze(1)
    bias = model.config.train.timestep_bias
    ids, _ = refine_tokens(model.decoder, images, model.encode_tokens(images), allowed, args.refine, timestep_bias=bias,
                           seed=seed)  # fmt: skip
    return ids


def add_reconstruct(commands) -> None:
    parser = add_command(
        commands,
        "reconstruct",
        "image -> text -> image: redraw each image from its text",
        "dediffusion reconstruct my-images/ --encoder bundled:world_encoder -o reconstructions/ --grid",
        "Encode each image to text, then redraw it from that text with the decoder (and any --transfer-decoder). "
        "Writes one PNG per image and decoder, and reconstructions.jsonl with one line each (source path, text, "
        "decoder, seed, guidance_scale, output path) into the -o folder; prints path<TAB>text per image.",
    )
    add_image_args(parser)
    add_encoder_arg(parser)
    add_decoder_arg(parser)
    parser.add_argument(
        "--transfer-decoder",
        action="append",
        default=[],
        metavar="PATH",
        help="also redraw with this other text-to-image model (repeatable), e.g. bundled:decoder_b",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="PATH|HUB_ID",
        help="also redraw with this diffusers text-to-image pipeline (SD 1.x/2.x, SDXL; repeatable) from the text's "
        "unique words, cut to its tokenizer",
    )
    add_output_arg(parser, "reconstructions", "folder for the PNGs and reconstructions.jsonl")
    parser.add_argument("--grid", action="store_true", help="also write grid.png: image | text | reconstructions")
    parser.add_argument("--max-images", type=positive_int, default=16, help="reconstruct at most this many images")
    add_sampling_args(parser, num_inference_steps=50)
    add_runtime_args(parser, batch_size=16)
    parser.set_defaults(handler=run_reconstruct)


def run_reconstruct(args) -> int:
    from ..models.decoder import TextToImageDecoder

    set_threads(args)
    folder, grid = output_folder(args)
    model, errors, rows, drawn = load_model(args), [], [], []
    others = [(name, TextToImageDecoder.from_pretrained(name).to(args.device)) for name in args.transfer_decoder]
    pipelines = [(name, load_pipeline(name, args.device)) for name in args.pipeline]
    done = 0
    for paths, images in iterate_batches(model, args, errors, limit=args.max_images, desc="reconstruct"):
        seeds = list(range(args.seed + done, args.seed + done + len(images)))
        texts, redrawn = model.reconstruct(images, args.guidance_scale, args.num_inference_steps, seeds)
        columns = [(decoder_label(model), texts, redrawn)]
        columns += [(name, texts, redraw(decoder, texts, seeds, args)) for name, decoder in others]
        if pipelines:
            unique = model.encode(images, unique_words=True)
            columns += [(name, unique, target.generate(unique, *sampling(args), seeds)) for name, target in pipelines]
        rows += write_reconstructions(folder, done, paths, seeds, columns, args)
        drawn.append((images, texts, [images for _, _, images in columns]))
        sys.stdout.write("".join(f"{path}\t{text}\n" for path, text in zip(paths, texts)))
        done += len(images)
    finish_reconstruction(folder, grid, rows, drawn, [decoder_label(model), *args.transfer_decoder, *args.pipeline])
    return report(done, errors)


def output_folder(args) -> tuple[Path, Path | None]:
    """The -o folder and the grid file (None without --grid); `-o NAME.png` (the old grid file) still
    works for one release: the grid goes there, the images to the folder NAME beside it."""
    output = Path(args.output)
    if output.suffix.lower() == ".png":
        logger.warning("-o FILE.png is deprecated and goes away in the next release; use -o FOLDER --grid")
        return output.with_suffix(""), output
    return output, output / "grid.png" if args.grid else None


def decoder_label(model) -> str:
    return model.decoder.source


def sampling(args) -> tuple[float, int]:
    return args.guidance_scale, args.num_inference_steps


def load_pipeline(name: str, device: str):
    from ..models.pipelines import PipelineTarget

    return PipelineTarget.from_pretrained(name, device=device)


def redraw(decoder, texts, seeds, args):
    from ..models.dediffusion import sample_generators

    generators = sample_generators(seeds, decoder.device)
    return decoder.generate(texts, None, args.guidance_scale, args.num_inference_steps, generators)


def write_reconstructions(folder: Path, first: int, paths, seeds, columns, args) -> list[dict]:
    """One PNG per image and decoder (written atomically); returns their reconstructions.jsonl rows.
    `columns`: (decoder name, the texts it drew from, its images) each."""
    from ..atomic import atomic_write_bytes
    from ..data.images import to_pil

    rows = []
    for k, (path, seed) in enumerate(zip(paths, seeds)):
        for column, (name, texts, images) in enumerate(columns):
            suffix = "" if column == 0 else f".{Path(name.replace('bundled:', '')).name}"
            output = folder / f"{first + k:05d}-{Path(path).stem}{suffix}.png"
            atomic_write_bytes(output, png_bytes(to_pil(images[k])))
            row = {"path": str(path), "text": texts[k], "decoder": name, "seed": seed}
            rows.append(row | {"guidance_scale": args.guidance_scale, "num_inference_steps": args.num_inference_steps,
                               "output": str(output)})  # fmt: skip
    return rows


def png_bytes(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def finish_reconstruction(folder: Path, grid: Path | None, rows: list[dict], drawn: list, names: list[str]) -> None:
    """reconstructions.jsonl (and the grid) once every image is drawn."""
    import torch

    from ..data.grid import save_grid

    if not rows:
        return
    write_output(str(folder / "reconstructions.jsonl"), "".join(json.dumps(row) + "\n" for row in rows))
    logger.info("wrote %d images and reconstructions.jsonl to %s", len(rows), folder)
    if grid is not None:
        images = torch.cat([batch[0] for batch in drawn])
        texts = [text for batch in drawn for text in batch[1]]
        columns = [torch.cat([batch[2][c] for batch in drawn]) for c in range(len(names))]
        save_grid(grid, images, texts, columns, headers=["image", "text", *names])
        logger.info("wrote %s", grid)


def add_ask(commands) -> None:
    parser = add_command(
        commands,
        "ask",
        "encode an image to text, then ask a text-only language model about it",
        'dediffusion ask scene.png "what color is the circle?" --choices red green blue',
    )
    parser.add_argument("image", help="image file")
    parser.add_argument("question", help='the question, e.g. "what color is the circle?"')
    parser.add_argument("--choices", nargs="+", default=None, help="closed answer set (ranked, calibrated)")
    add_encoder_arg(parser)
    add_decoder_arg(parser)
    parser.add_argument("--llm", default="smollm2", help="'smollm2', a transformers model folder, or a server URL")
    parser.add_argument("--llm-model", default=None, help="model name on the --llm server (default: its first)")
    parser.add_argument(
        "--few-shot-file", default=None, help='JSONL of solved examples {"context","question","answer"}'
    )
    add_runtime_args(parser, seed=False)
    parser.set_defaults(handler=run_ask)


def run_ask(args) -> int:
    from ..data.images import load_image
    from ..eval.qa import QAItem, answer_freely, answer_questions, load_examples
    from ..llm import load_llm

    set_threads(args)
    model = load_model(args)
    text = model.encode(load_image(args.image, model.decoder.resolution)[None].to(model.device))[0]
    sys.stdout.write(f"text: {text}\n")
    examples = load_examples(args.few_shot_file) if args.few_shot_file else []
    lm = load_llm(args.llm, device=args.device, model=args.llm_model)
    if args.choices:
        answer = answer_questions(lm, [QAItem(text, args.question, tuple(args.choices))], examples)[0]
    else:
        answer = answer_freely(lm, text, args.question, examples)
    sys.stdout.write(f"answer: {answer}\n")
    return 0
