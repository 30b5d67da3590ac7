"""Command line: parse arguments and dispatch to library functions (`main(argv=None)`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("dediffusion")


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: those options' help says what happens without them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dediffusion", description=__doc__, formatter_class=Formatter)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train(commands)
    add_encode(commands)
    add_reconstruct(commands)
    add_world(commands)
    add_demo(commands)
    add_ask(commands)
    add_evaluate(commands)
    return parser


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="De-Diffusion model folder (a run's final/ or a checkpoint)")
    parser.add_argument("--decoder", default=None, help="decoder folder or hub id (default: the one the model records)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")


def add_train(commands) -> None:
    parser = commands.add_parser("train", help="train an encoder on a folder of images", formatter_class=Formatter)
    parser.add_argument("--preset", default=None, help="bundled preset name or YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. train.steps=200 (repeatable)",
    )
    parser.add_argument("--output-dir", required=True, help="run folder (config, metrics, checkpoints, final/)")
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    add_threads_arg(parser)
    parser.set_defaults(handler=run_train)


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


def add_reconstruct(commands) -> None:
    parser = commands.add_parser("reconstruct", help="image -> text -> image grid", formatter_class=Formatter)
    parser.add_argument("paths", nargs="+", help="image files or folders")
    add_model_args(parser)
    parser.add_argument("--output", "-o", default="reconstruction.png", help="grid PNG to write")
    parser.add_argument("--max-images", type=int, default=16, help="at most this many images")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--num-inference-steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image's noise")
    parser.set_defaults(handler=run_reconstruct)


def add_demo(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="bundled world: test images -> De-Diffusion text -> images redrawn by decoders A and B",
        formatter_class=Formatter,
    )
    parser.add_argument("--out", "-o", default="demo.png", help="grid PNG to write")
    parser.add_argument("-n", "--num-images", type=int, default=8, help="how many test images")
    parser.add_argument("--model", default="bundled:world_encoder", help="De-Diffusion model folder")
    parser.add_argument("--decoder-b", default="bundled:decoder_b", help="the third-party decoder folder")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--num-inference-steps", type=int, default=25, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image's noise")
    parser.set_defaults(handler=run_demo)


def run_demo(args) -> int:
    from .world.demo import run_demo as demo

    result = demo(
        args.out, args.num_images, args.model, args.decoder_b, args.guidance_scale, args.num_inference_steps, args.seed
    )
    for text, description in zip(result.texts, result.descriptions):
        sys.stdout.write(f"{text}\n    (true scene: {description})\n")
    logger.info("wrote %s (columns: test image | text | decoder A | decoder B)", result.grid)
    return 0


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
    from .data.images import load_image
    from .eval.qa import QAItem, answer_freely, answer_questions, load_examples
    from .llm import load_llm

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


def add_world(commands) -> None:
    world = commands.add_parser("world", help="the bundled procedural world", formatter_class=Formatter)
    actions = world.add_subparsers(dest="action", required=True)
    sample = actions.add_parser("sample", help="write world images with their descriptions", formatter_class=Formatter)
    sample.add_argument("out_dir", help="folder for the PNGs and descriptions.jsonl")
    sample.add_argument("-n", "--num-images", type=int, default=16, help="how many images")
    sample.add_argument("--split", choices=("train", "test"), default="train", help="which split")
    sample.add_argument("--seed", type=int, default=None, help="training-split seed (default 0)")
    sample.add_argument("--size", type=int, default=32, help="image side in pixels")
    sample.set_defaults(handler=run_world_sample)

    decoder = actions.add_parser(
        "pretrain-decoder",
        help="pretrain the world's text-to-image decoder A (latent, own CLIP-style text encoder) or B "
        "(pixel space, frozen MiniLM) from scratch",
        formatter_class=Formatter,
    )
    decoder.add_argument("which", choices=("a", "b"), help="which decoder")
    decoder.add_argument(
        "--out",
        required=True,
        help="diffusers folder to write (replaced atomically at the end); checkpoints go to OUT.checkpoints "
        "meanwhile, and rerunning the same command after an interruption continues from them",
    )
    decoder.add_argument("--steps", type=int, default=None, help="UNet optimiser steps (default: the bundled model's)")
    decoder.add_argument("--vae-steps", type=int, default=None, help="decoder A: VAE optimiser steps")
    decoder.add_argument("--text-steps", type=int, default=None, help="decoder A: text-encoder layout steps")
    decoder.add_argument("--seed", type=int, default=None, help="seed (default: the bundled model's)")
    decoder.add_argument(
        "--p-loose",
        type=float,
        default=None,
        help="decoder A: share of loose-word captions (default 0.5, as the bundled model)",
    )
    decoder.add_argument(
        "--object-weight",
        type=float,
        default=None,
        help="decoder A: extra weight of the denoising error under objects (default 0, as the bundled model)",
    )
    decoder.add_argument(
        "--vae-shape-weight",
        type=float,
        default=None,
        help="decoder A: weight of the VAE's shape-in-latents loss (default 0.1, as the bundled model; 0: none)",
    )
    decoder.add_argument(
        "--vae-shape-margin",
        type=float,
        default=None,
        help="decoder A: the shape-in-latents loss is a hinge with this margin in latent standard deviations "
        "(default 0.2, as the bundled model)",
    )
    add_threads_arg(decoder)
    decoder.set_defaults(handler=run_world_pretrain_decoder)

    perception = actions.add_parser(
        "pretrain-perception",
        help="train the perception model that reads scene graphs back from pixels",
        formatter_class=Formatter,
    )
    perception.add_argument("--out", required=True, help="folder for model.safetensors and config.json")
    perception.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    perception.add_argument("--batch-size", type=int, default=128, help="scenes per step")
    perception.add_argument("--seed", type=int, default=0, help="seed of the scenes and the weights")
    add_threads_arg(perception)
    perception.set_defaults(handler=run_world_pretrain_perception)

    bundle = actions.add_parser(
        "bundle",
        help="copy a trained artifact into the installed package, where it loads as bundled:NAME",
        formatter_class=Formatter,
    )
    bundle.add_argument("source", help="the artifact folder (an encoder: its run's final/)")
    bundle.add_argument("name", choices=("decoder_a", "decoder_b", "world_encoder", "perception"), help="which one")
    bundle.set_defaults(handler=run_world_bundle)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def set_threads(args) -> None:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def run_world_pretrain_decoder(args) -> int:
    set_threads(args)
    options = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    if args.which == "a":
        from .world.decoders import pretrain_decoder_a

        stages = (
            ("vae_steps", args.vae_steps), ("text_steps", args.text_steps), ("p_loose", args.p_loose),
            ("object_weight", args.object_weight), ("vae_shape_weight", args.vae_shape_weight),
            ("vae_shape_margin", args.vae_shape_margin),
        )  # fmt: skip
        options.update({k: v for k, v in stages if v is not None})
        pretrain_decoder_a(args.out, command=args.command_line, **options)
    else:
        from .world.decoder_b import pretrain_decoder_b

        options_of_a = (
            args.vae_steps, args.text_steps, args.p_loose, args.object_weight, args.vae_shape_weight,
            args.vae_shape_margin,
        )  # fmt: skip
        if any(v is not None for v in options_of_a):
            raise SystemExit(
                "error: decoder B has no VAE and a frozen text encoder, and learns from phrases only; "
                "drop --vae-steps/--text-steps/--p-loose/--object-weight/--vae-shape-weight/--vae-shape-margin"
            )
        pretrain_decoder_b(args.out, command=args.command_line, **options)
    return 0


def run_world_pretrain_perception(args) -> int:
    import time

    from .world.perception import train_perception

    set_threads(args)
    start = time.perf_counter()
    model = train_perception(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    model.metadata["command"] = args.command_line
    model.metadata["command_wall_time_s"] = round(time.perf_counter() - start, 1)
    model.save(args.out)
    logger.info("saved the perception model to %s", args.out)
    return 0


def run_world_bundle(args) -> int:
    from .world.bundle import bundle_artifact

    try:
        size = bundle_artifact(args.source, args.name)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    logger.info("bundled %s as bundled:%s; the bundle is now %.1f MB", args.source, args.name, size / 1e6)
    return 0


def run_world_sample(args) -> int:
    from .world import write_samples

    paths = write_samples(args.num_images, args.out_dir, seed=args.seed, size=args.size, split=args.split)
    logger.info("wrote %d images and descriptions.jsonl to %s", len(paths), args.out_dir)
    return 0


def run_train(args) -> int:
    from .config import load_config
    from .train.loop import train

    set_threads(args)
    config = load_config(args.preset, args.overrides)
    final = train(config, args.output_dir, resume=args.resume, cpu=args.cpu, command=args.command_line)
    logger.info("done: %s", final)
    return 0


def load_model(args):
    from .models.decoder import TextToImageDecoder
    from .models.dediffusion import DeDiffusion

    decoder = TextToImageDecoder.from_pretrained(args.decoder, lazy=True) if args.decoder else None
    return DeDiffusion.from_pretrained(args.model, decoder=decoder, device=args.device).eval()


def iterate_batches(model, paths, batch_size: int, errors: list):
    """Yield (paths, images) batches of readable images; unreadable ones are appended to `errors`."""
    from .data.images import ImageFolder, load_batch

    dataset = ImageFolder(paths, model.encoder.config.image_size)
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        images, loaded, failed = load_batch(dataset, indices)
        errors.extend(failed)
        for error in failed:
            logger.warning("skipped %s", error)
        if loaded:
            yield [dataset.paths[indices[k]] for k in loaded], images


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


def run_reconstruct(args) -> int:
    from .eval.grid import save_grid

    model, errors = load_model(args), []
    first = next(iterate_batches(model, args.paths, args.max_images, errors), None)  # the first max_images
    if first is None:
        return report(0, errors)
    _, images = first
    seeds = range(args.seed, args.seed + len(images))
    texts, recon = model.reconstruct(images, args.guidance_scale, args.num_inference_steps, seeds)
    save_grid(Path(args.output), images, texts, [recon], headers=["image", "text", "reconstruction"])
    sys.stdout.write("".join(text + "\n" for text in texts))
    logger.info("wrote %s", args.output)
    return report(len(texts), errors)


def add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="the paper's experiments: reconstruction and transfer, cost, token ablation, few-shot, QA",
        formatter_class=Formatter,
    )
    parser.add_argument("--model", default="bundled:world_encoder", help="De-Diffusion model folder")
    parser.add_argument("--decoder-b", default="bundled:decoder_b", help="an outside decoder ('none' to skip)")
    parser.add_argument("--images", default=None, help="a folder of your images (default: world test scenes)")
    parser.add_argument("--num-images", type=int, default=100, help="images to reconstruct")
    parser.add_argument(
        "--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="the sweep (1: no guidance)"
    )
    parser.add_argument("--num-inference-steps", type=int, default=20, help="sampler steps per image")
    parser.add_argument("--inversion-steps", type=int, default=150, help="prompt-inversion steps per image")
    parser.add_argument(
        "--ablation-model", action="append", default=[], help="an encoder with another num_tokens (repeatable)"
    )
    parser.add_argument("--few-shot-episodes", type=int, default=200, help="5-way 1-shot episodes")
    parser.add_argument("--few-shot-scenes", type=int, default=1000, help="test scenes the episodes draw from")
    parser.add_argument("--llm", default=None, help="question answering: smollm2, a model folder or an http(s) URL")
    parser.add_argument("--llm-model", default=None, help="model name served at the --llm URL")
    parser.add_argument("--qa-scenes", type=int, default=50, help="test scenes whose questions the LLM answers")
    parser.add_argument("--qa-shots", type=int, default=3, help="solved examples in the few-shot prompt")
    parser.add_argument("--seed", type=int, default=0, help="image i is drawn with seed + i")
    parser.add_argument(
        "--draw-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
        help="redraw under autocast to this dtype; auto: bfloat16 where the CPU (AVX512-BF16/AMX) or GPU "
        "computes it natively, else float32",
    )  # fmt: skip
    parser.add_argument("--out", default="evaluation", help="report folder (report.md, report.json, plots)")
    add_threads_arg(parser)
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> int:
    import datetime

    from .eval.report import machine_info, write_report
    from .eval.suite import EvaluationSettings, run_evaluation

    set_threads(args)
    settings = EvaluationSettings(
        model=args.model,
        decoder_b=None if args.decoder_b.lower() == "none" else args.decoder_b,
        images=args.images,
        num_images=args.num_images,
        guidance_scales=tuple(args.guidance_scales),
        num_inference_steps=args.num_inference_steps,
        draw_dtype=args.draw_dtype,
        inversion_steps=args.inversion_steps,
        ablation_models=tuple(args.ablation_model),
        few_shot_episodes=args.few_shot_episodes,
        few_shot_scenes=args.few_shot_scenes,
        llm=args.llm,
        llm_model=args.llm_model,
        qa_scenes=args.qa_scenes,
        qa_shots=args.qa_shots,
        seed=args.seed,
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    record = run_evaluation(settings, Path(args.out))
    record["command"] = args.command_line
    record["machine"] = machine_info()
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    path = write_report(record, Path(args.out))
    sys.stdout.write(path.read_text())
    logger.info("wrote %s", path)
    return 0


def write_output(path: str | None, text: str) -> None:
    from .atomic import atomic_write_bytes

    if path is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(Path(path), text.encode())


def report(done: int, errors: list) -> int:
    """Summarise a batch job; exit status 1 when some inputs were skipped."""
    if errors:
        logger.error(
            "processed %d images, skipped %d unreadable: %s",
            done,
            len(errors),
            ", ".join(str(e.path) for e in errors),
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["dediffusion", *(sys.argv[1:] if argv is None else argv)])  # recorded by pretraining
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .errors import USER_ERRORS

    try:
        return args.handler(args)
    except USER_ERRORS as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
