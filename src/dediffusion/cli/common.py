"""What every command shares: the help formatter, argument types, the common options (one spelling for
one thing on every command), old spellings kept for a release, model loading and the exit status of a
batch job."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path

logger = logging.getLogger("dediffusion")

DEFAULT_ENCODER = "bundled:world_encoder"


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: those options' help says what happens without them.
    Descriptions and examples (epilog) keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is argparse.SUPPRESS or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_command(commands, name: str, summary: str, example: str, description: str = ""):
    """A subcommand whose --help says what it does (`summary`, `description`) and shows `example`."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description or summary[0].upper() + summary[1:] + ".", 100),
        epilog="example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=Formatter,
    )
    add_logging_args(parser, argparse.SUPPRESS)
    return parser


def add_logging_args(parser: argparse.ArgumentParser, default) -> None:
    """--quiet and --verbose, accepted before or after the command name."""
    parser.add_argument("--quiet", "-q", action="store_true", default=default, help="only warnings and errors")
    parser.add_argument("--verbose", "-v", action="store_true", default=default, help="debug messages")


# ---- argument types: a bad value is one argparse error line naming it (exit 2) ---------------------


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number, 0 or more")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def _number(text: str, kind: type, name: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None


# ---- old spellings ----------------------------------------------------------------------------


class Deprecated(argparse.Action):
    """An old option spelling kept for one release: stores into the new option and records a warning."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        note_deprecated(namespace, option_string, self.new)


def note_deprecated(namespace, old: str, new: str) -> None:
    warnings = getattr(namespace, "deprecations", [])
    namespace.deprecations = [*warnings, f"{old} is deprecated and goes away in the next release; use {new}"]


# ---- the common options -----------------------------------------------------------------------


def add_output_arg(parser, default: str | None, help: str, old: tuple[str, ...] = ()) -> None:
    """-o/--output: where results go; `old` spellings still work, with a warning."""
    parser.add_argument("-o", "--output", default=default, metavar="PATH", help=help)
    if old:
        parser.add_argument(*old, dest="output", action=Deprecated, new="-o/--output")


def add_encoder_arg(parser, default: str | None = DEFAULT_ENCODER) -> None:
    """--encoder PATH|bundled:NAME (--model: its old name)."""
    parser.add_argument(
        "--encoder",
        default=default,
        required=default is None,
        metavar="PATH",
        help="trained encoder: a run's final/ folder, a checkpoint folder or bundled:world_encoder",
    )
    parser.add_argument("--model", dest="encoder", action=Deprecated, new="--encoder")


def add_decoder_arg(parser, help: str = "decoder folder or hub id (default: the one the encoder was trained with)"):
    parser.add_argument("--decoder", default=None, metavar="PATH|HUB_ID", help=help)


def add_runtime_args(parser, batch_size: int | None = None, seed: bool = True, device: bool = True) -> None:
    """--batch-size, --seed, --device and --threads, where a command has a use for them."""
    if batch_size is not None:
        parser.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per forward pass")
    if seed:
        parser.add_argument("--seed", type=non_negative_int, default=0, help="image i's noise is drawn with seed + i")
    if device:
        parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    add_threads_arg(parser)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")


def add_sampling_args(parser, num_inference_steps: int) -> None:
    parser.add_argument("--guidance-scale", type=positive_float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--num-inference-steps", type=positive_int, default=num_inference_steps, help="denoising steps")


def set_threads(args) -> None:
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)


# ---- models and outputs -----------------------------------------------------------------------


def load_model(args):
    """The encoder named by --encoder, with the --decoder given (else the one it records), on --device."""
    from ..models.decoder import TextToImageDecoder
    from ..models.dediffusion import DeDiffusion

    decoder = TextToImageDecoder.from_pretrained(args.decoder, lazy=True) if args.decoder else None
    return DeDiffusion.from_pretrained(args.encoder, decoder=decoder, device=args.device).eval()


def write_output(path: str | None, text: str) -> None:
    """`text` to the file `path` (atomically: complete or not at all), or to standard output."""
    from ..atomic import atomic_write_bytes

    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        atomic_write_bytes(Path(path), text.encode())


def report(done: int, errors: list) -> int:
    """Summarise a batch job; exit status 1 when some inputs were skipped, 2 when all were."""
    if not errors:
        return 0
    names = ", ".join(str(e.path) for e in errors)
    if not done:
        logger.error("none of the %d images could be read (%s); nothing was processed", len(errors), names)
        return 2
    logger.error("processed %d images, skipped %d unreadable: %s", done, len(errors), names)
    return 1


# ---- batches of input images ------------------------------------------------------------------


def add_image_args(parser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="images: files or folders (searched recursively), webdataset shards (.tar files, a folder of them "
        "or a quoted pattern such as 'shards/{000000..000009}.tar'), parquet files or a datasets folder",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=89_478_485,
        help="refuse larger images (a guard against decompression bombs)",
    )


def iterate_batches(model, args, errors: list, limit: int | None = None, desc: str = "encode"):
    """Yield (names, images) batches of `args.batch_size` readable images among `args.paths` (the first
    `limit`), with a progress bar; unreadable ones are logged and appended to `errors`. A name is the
    image's path, or `SHARD#MEMBER` / `FILE#ROW` for shards, parquet and arrow files."""
    from ..data.images import load_batch
    from ..data.sources import open_source
    from ..progress import progress_bar

    dataset = open_source(args.paths, model.decoder.resolution, args.max_pixels)  # as in training
    count = min(len(dataset), limit or len(dataset))
    if count < len(dataset):
        logger.info("using the first %d of the %d images found", count, len(dataset))
    notice_unfamiliar(dataset, count, getattr(model, "trained_resolution", None))
    with progress_bar(count, desc, unit="image") as bar:
        for start in range(0, count, args.batch_size):
            indices = list(range(start, min(start + args.batch_size, count)))
            images, loaded, failed = load_batch(dataset, indices)
            errors.extend(failed)
            for error in failed:
                logger.warning("skipped %s", error)
            if loaded:
                yield [dataset.name(indices[k]) for k in loaded], images
            bar.update(len(indices))  # after the caller's work on the batch: the bar's rate is the job's


def notice_unfamiliar(dataset, count: int, trained: int | None, checked: int = 64) -> None:
    """Log a notice when input images are far in size from the images the encoder was trained on (half
    or four times its side or more): its words may not describe them (the world encoder, trained on
    32x32 scenes, writes world words for any photograph). Reads only the first `checked` headers of the
    first `count` images."""
    from PIL import Image

    if not trained:
        return
    far = []
    for index in range(min(count, checked)):
        try:
            with dataset.open(index) as handle, Image.open(handle) as image:
                side = min(image.size)
        except Exception:  # unreadable: reported when it is loaded
            continue
        if not trained / 2 <= side <= trained * 4:
            far.append(f"{dataset.name(index)} ({image.size[0]}x{image.size[1]})")
    if far:
        logger.warning(
            "this encoder was trained on %dx%d images; %d input(s) differ far from that, e.g. %s: "
            "its text may not describe them well (train an encoder on images like yours: dediffusion train)",
            trained,
            trained,
            len(far),
            far[0],
        )
