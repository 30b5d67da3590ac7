"""Command line: parse arguments and dispatch to library functions (`main(argv=None)`); one module per
command group."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import Formatter
from .encode import add_ask, add_encode, add_reconstruct
from .evaluate import add_evaluate
from .serve import add_serve
from .train import add_train
from .world import add_demo, add_world

logger = logging.getLogger("dediffusion")

DESCRIPTION = (
    "Turn images into text that text-to-image models and language models can read (De-Diffusion). "
    "Runs offline on the bundled world; try `dediffusion demo`."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dediffusion", description=DESCRIPTION, formatter_class=Formatter)
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
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
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["dediffusion", *(sys.argv[1:] if argv is None else argv)])  # recorded by pretraining
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from ..errors import USER_ERRORS

    try:
        return args.handler(args)
    except USER_ERRORS as error:
        logger.error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())
