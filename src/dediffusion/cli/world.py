"""`dediffusion world ...` and `dediffusion demo`: the bundled procedural world and its artifacts."""

from __future__ import annotations

import logging
import sys

from .common import Formatter, add_threads_arg, set_threads

logger = logging.getLogger("dediffusion")


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


def run_world_sample(args) -> int:
    from ..world import write_samples

    paths = write_samples(args.num_images, args.out_dir, seed=args.seed, size=args.size, split=args.split)
    logger.info("wrote %d images and descriptions.jsonl to %s", len(paths), args.out_dir)
    return 0


def run_world_pretrain_decoder(args) -> int:
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
        pretrain_decoder_a(args.out, command=args.command_line, **options)
    else:
        from ..world.decoder_b import pretrain_decoder_b

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

    from ..world.perception import train_perception

    set_threads(args)
    start = time.perf_counter()
    model = train_perception(steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    model.metadata["command"] = args.command_line
    model.metadata["command_wall_time_s"] = round(time.perf_counter() - start, 1)
    model.save(args.out)
    logger.info("saved the perception model to %s", args.out)
    return 0


def run_world_bundle(args) -> int:
    from ..world.bundle import bundle_artifact

    try:
        size = bundle_artifact(args.source, args.name)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    logger.info("bundled %s as bundled:%s; the bundle is now %.1f MB", args.source, args.name, size / 1e6)
    return 0


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
    from ..world.demo import run_demo as demo

    result = demo(
        args.out, args.num_images, args.model, args.decoder_b, args.guidance_scale, args.num_inference_steps, args.seed
    )
    for text, description in zip(result.texts, result.descriptions):
        sys.stdout.write(f"{text}\n    (true scene: {description})\n")
    logger.info("wrote %s (columns: test image | text | decoder A | decoder B)", result.grid)
    return 0
