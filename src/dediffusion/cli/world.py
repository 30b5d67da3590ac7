"""`dediffusion world ...` and `dediffusion demo`: the bundled procedural world and its artifacts."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import (
    Formatter,
    add_command,
    add_encoder_arg,
    add_output_arg,
    add_runtime_args,
    add_sampling_args,
    add_threads_arg,
    non_negative_float,
    non_negative_int,
    note_deprecated,
    positive_int,
    set_threads,
)

logger = logging.getLogger("dediffusion")


def add_world(commands) -> None:
    world = commands.add_parser(
        "world",
        help="the bundled procedural world: sample images, pretrain its models, bundle them",
        description="The bundled procedural world: sample images, pretrain its models, bundle them.",
        epilog="example:\n  dediffusion world sample -n 1000 -o world-images/",
        formatter_class=Formatter,
    )
    actions = world.add_subparsers(dest="action", required=True)
    sample = add_command(
        actions,
        "sample",
        "write world images with their descriptions",
        "dediffusion world sample -n 1000 -o world-images/",
    )
    add_output_arg(sample, None, "folder for the PNGs and descriptions.jsonl; required")
    sample.add_argument("out_dir", nargs="?", default=None, help=argparse.SUPPRESS)  # the old spelling of -o
    sample.add_argument("-n", "--num-images", type=positive_int, default=16, help="how many images")
    sample.add_argument("--split", choices=("train", "test"), default="train", help="which split")
    sample.add_argument("--seed", type=non_negative_int, default=None, help="training-split seed (default 0)")
    sample.add_argument("--size", type=positive_int, default=32, help="image side in pixels")
    sample.set_defaults(handler=run_world_sample)

    texts = add_command(
        actions,
        "texts",
        "write descriptions of world scenes that no training image shows, one per line: unpaired text for "
        "a sleep phase on sentences (sleep.texts)",
        "dediffusion world texts -n 8192 -o runs/world-texts.txt",
    )
    add_output_arg(texts, None, "text file to write; required")
    texts.add_argument("-n", "--num-texts", type=positive_int, default=8192, help="how many descriptions")
    texts.add_argument(
        "--seed", type=non_negative_int, default=1,
        help="training-stream seed of the described scenes; keep it other than the images' (world sample "
        "--seed, default 0) so that no text describes a training image",
    )  # fmt: skip
    texts.set_defaults(handler=run_world_texts)

    decoder = add_command(
        actions,
        "pretrain-decoder",
        "pretrain the world's text-to-image decoder A (latent, own CLIP-style text encoder) or B "
        "(pixel space, frozen MiniLM) from scratch",
        "dediffusion world pretrain-decoder a -o runs/decoder_a",
    )
    decoder.add_argument("which", choices=("a", "b"), help="which decoder")
    add_output_arg(
        decoder,
        None,
        "diffusers folder to write (replaced atomically at the end); checkpoints go to OUTPUT.checkpoints "
        "meanwhile, and rerunning the same command after an interruption continues from them; required",
        old=("--out",),
    )
    decoder.add_argument(
        "--steps", type=positive_int, default=None, help="UNet optimiser steps (default: the bundled model's)"
    )
    decoder.add_argument("--vae-steps", type=positive_int, default=None, help="decoder A: VAE optimiser steps")
    decoder.add_argument("--text-steps", type=non_negative_int, default=None, help="decoder A: text-encoder steps")
    decoder.add_argument("--seed", type=non_negative_int, default=None, help="seed (default: the bundled model's)")
    decoder.add_argument(
        "--p-loose",
        type=non_negative_float,
        default=None,
        help="decoder A: share of loose-word captions (default 0.5, as the bundled model)",
    )
    decoder.add_argument(
        "--object-weight",
        type=non_negative_float,
        default=None,
        help="decoder A: extra weight of the denoising error under objects (default 0, as the bundled model)",
    )
    decoder.add_argument(
        "--vae-shape-weight",
        type=non_negative_float,
        default=None,
        help="decoder A: weight of the VAE's shape-in-latents loss (default 0.1, as the bundled model; 0: none)",
    )
    decoder.add_argument(
        "--vae-shape-margin",
        type=non_negative_float,
        default=None,
        help="decoder A: the shape-in-latents loss is a hinge with this margin in latent standard deviations "
        "(default 0.2, as the bundled model)",
    )
    add_threads_arg(decoder)
    decoder.set_defaults(handler=run_world_pretrain_decoder)

    perception = add_command(
        actions,
        "pretrain-perception",
        "train the perception model that reads scene graphs back from pixels",
        "dediffusion world pretrain-perception -o runs/perception",
    )
    add_output_arg(perception, None, "folder for model.safetensors and config.json; required", old=("--out",))
    perception.add_argument("--steps", type=positive_int, default=1500, help="optimiser steps")
    perception.add_argument("--batch-size", type=positive_int, default=128, help="scenes per step")
    perception.add_argument("--seed", type=non_negative_int, default=0, help="seed of the scenes and the weights")
    add_threads_arg(perception)
    perception.set_defaults(handler=run_world_pretrain_perception)

    bundle = add_command(
        actions,
        "bundle",
        "copy a trained artifact into the installed package, where it loads as bundled:NAME",
        "dediffusion world bundle runs/world/final world_encoder",
    )
    bundle.add_argument("source", help="the artifact folder (an encoder: its run's final/)")
    bundle.add_argument("name", choices=("decoder_a", "decoder_b", "world_encoder", "perception"), help="which one")
    bundle.set_defaults(handler=run_world_bundle)


def run_world_sample(args) -> int:
    from ..config import ConfigError
    from ..world import write_samples

    if args.out_dir is not None:
        if args.output is not None:
            raise ConfigError(f"give the folder once: -o {args.output} (drop '{args.out_dir}')")
        note_deprecated(args, "the positional folder of world sample", "-o FOLDER")
        logger.warning("%s", args.deprecations[-1])
        args.output = args.out_dir
    if args.output is None:
        raise ConfigError("world sample needs a folder to write: -o FOLDER")
    write_samples(args.num_images, args.output, seed=args.seed, size=args.size, split=args.split)
    return 0


def run_world_texts(args) -> int:
    from pathlib import Path

    from ..atomic import atomic_write_bytes
    from ..world import describe, train_scenes

    output = require_output(args)
    lines = [describe(scene) for scene in train_scenes(args.num_texts, seed=args.seed)]
    atomic_write_bytes(Path(output), ("\n".join(lines) + "\n").encode("utf-8"))
    logger.info("wrote %d descriptions of training-stream scenes (seed %d) to %s", len(lines), args.seed, output)
    return 0


def require_output(args) -> str:
    from ..config import ConfigError

    if not args.output:
        what = "a file" if args.action == "texts" else "a folder"
        raise ConfigError(f"{args.command} {args.action} needs {what} to write: -o {what.split()[1].upper()}")
    return args.output


def run_world_pretrain_decoder(args) -> int:
    output = require_output(args)
    set_threads(args)
    options = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    if args.which == "a":
        from ..world.decoders import pretrain_decoder_a

        stages = (
            ("vae_steps", args.vae_steps), ("text_steps", args.text_steps), ("p_loose", args.p_loose),
            ("object_weight", args.object_weight), ("vae_shape_weight", args.vae_shape_weight),
            ("vae_shape_margin", args.vae_shape_margin),
        )  # fmt: skip
        options.update({k: v for k, v in stages if v is not None})
        pretrain_decoder_a(output, command=args.command_line, **options)
    else:
        from ..config import ConfigError
        from ..world.decoder_b import pretrain_decoder_b

        options_of_a = (
            args.vae_steps, args.text_steps, args.p_loose, args.object_weight, args.vae_shape_weight,
            args.vae_shape_margin,
        )  # fmt: skip
        if any(v is not None for v in options_of_a):
            raise ConfigError(
                "decoder B has no VAE and a frozen text encoder, and learns from phrases only; "
                "drop --vae-steps/--text-steps/--p-loose/--object-weight/--vae-shape-weight/--vae-shape-margin"
            )
        pretrain_decoder_b(output, command=args.command_line, **options)
    return 0


def run_world_pretrain_perception(args) -> int:
    import time

    from ..world.perception import train_perception

    output = require_output(args)
    set_threads(args)
    start = time.perf_counter()
    model = train_perception(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    model.metadata["command"] = args.command_line
    model.metadata["command_wall_time_s"] = round(time.perf_counter() - start, 1)
    model.save(output)
    return 0


def run_world_bundle(args) -> int:
    from ..world.bundle import bundle_artifact

    try:
        size = bundle_artifact(args.source, args.name)
    except ValueError as error:
        from ..config import ConfigError

        raise ConfigError(str(error)) from None
    logger.info("bundled %s as bundled:%s; the bundle is now %.1f MB", args.source, args.name, size / 1e6)
    return 0


def add_demo(commands) -> None:
    parser = add_command(
        commands,
        "demo",
        "bundled world: test images -> De-Diffusion text -> images redrawn by decoders A and B",
        "dediffusion demo -o demo.png -n 8",
        "Encode the world's first test images with the bundled encoder, redraw them from the text with "
        "decoder A (the one it was trained with) and decoder B (one it never saw), and write one grid: "
        "test image | text | decoder A | decoder B. Runs offline on a CPU in seconds.",
    )
    add_output_arg(parser, "demo.png", "grid PNG to write", old=("--out",))
    parser.add_argument("-n", "--num-images", type=positive_int, default=8, help="how many test images")
    add_encoder_arg(parser)
    parser.add_argument("--decoder-b", default="bundled:decoder_b", help="the third-party decoder folder")
    add_sampling_args(parser, num_inference_steps=25)
    add_runtime_args(parser, batch_size=8, device=False)
    parser.set_defaults(handler=run_demo)


def run_demo(args) -> int:
    from ..world.demo import run_demo as demo

    set_threads(args)
    result = demo(
        args.output, args.num_images, args.encoder, args.decoder_b, args.guidance_scale, args.num_inference_steps,
        args.seed, batch_size=args.batch_size,
    )  # fmt: skip
    for text, description in zip(result.texts, result.descriptions):
        sys.stdout.write(f"{text}\n    (true scene: {description})\n")
    logger.info("wrote %s (columns: test image | text | decoder A | decoder B)", result.grid)
    return 0
