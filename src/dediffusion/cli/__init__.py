"""Command line: parse arguments and dispatch to library functions (`main(argv=None)`); one module per
command group."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from .common import Formatter, add_logging_args
from .encode import add_ask, add_encode, add_reconstruct
from .evaluate import add_evaluate
from .serve import add_serve
from .train import add_train
from .world import add_demo, add_world

logger = logging.getLogger("dediffusion")

DESCRIPTION = (
    "Turn images into text that text-to-image models and language models can read (De-Diffusion). "
    "Runs offline on the bundled world; try `dediffusion demo`. `dediffusion COMMAND --help` shows each "
    "command's options and an example."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dediffusion", description=DESCRIPTION, formatter_class=Formatter)
    add_logging_args(parser, False)
    commands = parser.add_subparsers(dest="command", required=True)
    add_train(commands)
    add_encode(commands)
    add_reconstruct(commands)
    add_world(commands)
    add_demo(commands)
    add_ask(commands)
    add_evaluate(commands)
    add_serve(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a bad argument (2): argparse has printed why
        return int(exit.code or 0)
    args.command_line = " ".join(["dediffusion", *(sys.argv[1:] if argv is None else argv)])  # recorded by pretraining
    set_up_logging(args)
    from ..errors import USER_ERRORS

    try:
        with log_above_progress_bars():
            return args.handler(args)
    except USER_ERRORS as error:
        logger.error("%s", error)
        return 2


def set_up_logging(args) -> None:
    """INFO lines (DEBUG with --verbose, warnings only with --quiet), then any old option spellings used."""
    import os

    logging.basicConfig(format="%(levelname)s %(message)s")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar per model
    logger.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    for warning in getattr(args, "deprecations", []):
        logger.warning("%s", warning)


def log_above_progress_bars():
    """On a terminal with progress bars, log lines are written above the bars instead of through them."""
    from ..progress import progress_enabled

    if not progress_enabled():
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


if __name__ == "__main__":
    sys.exit(main())
