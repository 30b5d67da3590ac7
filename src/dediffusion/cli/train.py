"""`dediffusion train`: train an encoder against a frozen decoder on a folder of images."""

from __future__ import annotations

import logging

from .common import Formatter, add_threads_arg, set_threads

logger = logging.getLogger("dediffusion")


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


def run_train(args) -> int:
    from ..config import load_config
    from ..train.loop import train

    set_threads(args)
    config = load_config(args.preset, args.overrides)
    final = train(config, args.output_dir, resume=args.resume, cpu=args.cpu, command=args.command_line)
    logger.info("done: %s", final)
    return 0
