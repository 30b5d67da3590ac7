"""`dediffusion train`: train an encoder against a frozen decoder on images (a folder, shards, parquet...)."""

from __future__ import annotations

import logging

from .common import add_command, add_output_arg, add_threads_arg, non_negative_int, positive_int, set_threads

logger = logging.getLogger("dediffusion")

EXAMPLE = """\
dediffusion train --preset cpu-small --decoder path/to/diffusers-folder --data my-images/ -o runs/mine
dediffusion train --preset world --data world-images/ -o runs/world --set train.steps=500
accelerate launch --num_processes 2 -m dediffusion train --preset world --data world-images/ -o runs/world"""


def add_train(commands) -> None:
    parser = add_command(
        commands,
        "train",
        "train an encoder on images (a folder, shards, parquet) against a frozen text-to-image decoder",
        EXAMPLE,
        "Train an encoder that writes text for a frozen text-to-image decoder, from images alone. The run "
        "folder gets config.yaml, metrics.jsonl, checkpoints/ and, at the end, final/ (the trained encoder, "
        "for encode --encoder). Rerun with --resume latest to continue an interrupted run.",
    )
    parser.add_argument(
        "--preset", default=None, help="bundled preset (world, cpu-small, sd2-base) or a YAML file (default: none)"
    )
    parser.add_argument("--decoder", default=None, metavar="PATH|HUB_ID", help="the frozen decoder (decoder.path)")
    parser.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="training images (train.data): a folder, webdataset shards (a folder of .tar files or a quoted pattern "
        "such as 'shards/{000000..000099}.tar'), parquet files or a datasets save_to_disk folder",
    )
    parser.add_argument("--batch-size", type=positive_int, default=None, help="global batch (train.batch_size)")
    parser.add_argument("--seed", type=non_negative_int, default=None, help="seed of the run (train.seed)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. train.steps=200 (repeatable)",
    )
    add_output_arg(parser, None, "run folder (config, metrics, checkpoints, final/); required", old=("--output-dir",))
    parser.add_argument(
        "--resume",
        default=None,
        help="'latest' or a checkpoint folder; learning rate, steps, logging and checkpointing may change on resume",
    )
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    add_threads_arg(parser)
    parser.set_defaults(handler=run_train)


def run_train(args) -> int:
    from ..config import ConfigError, load_config
    from ..train.loop import train

    if not args.output:
        raise ConfigError("train needs a run folder: -o runs/NAME")
    set_threads(args)
    config = with_flags(load_config(args.preset, args.overrides), args)
    train(config, args.output, resume=args.resume, cpu=args.cpu, command=args.command_line)
    return 0


def with_flags(config, args):
    """--decoder, --data, --batch-size and --seed over the preset and --set (paths taken as given: no YAML
    parsing)."""
    import dataclasses

    if args.decoder:
        config = dataclasses.replace(config, decoder=dataclasses.replace(config.decoder, path=args.decoder))
    flags = {"data": args.data, "batch_size": args.batch_size, "seed": args.seed}
    chosen = {key: value for key, value in flags.items() if value is not None}
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **chosen)) if chosen else config
