"""What every command shares: the help formatter, common arguments, model loading, batches of images,
writing outputs and the exit status of a batch job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger("dediffusion")


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: those options' help says what happens without them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="De-Diffusion model folder (a run's final/ or a checkpoint)")
    parser.add_argument("--decoder", default=None, help="decoder folder or hub id (default: the one the model records)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def set_threads(args) -> None:
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def load_model(args):
    from ..models.decoder import TextToImageDecoder
    from ..models.dediffusion import DeDiffusion

    decoder = TextToImageDecoder.from_pretrained(args.decoder, lazy=True) if args.decoder else None
    return DeDiffusion.from_pretrained(args.model, decoder=decoder, device=args.device).eval()


def iterate_batches(model, paths, batch_size: int, errors: list):
    """Yield (paths, images) batches of readable images; unreadable ones are appended to `errors`."""
    from ..data.images import ImageFolder, load_batch

    dataset = ImageFolder(paths, model.encoder.config.image_size)
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        images, loaded, failed = load_batch(dataset, indices)
        errors.extend(failed)
        for error in failed:
            logger.warning("skipped %s", error)
        if loaded:
            yield [dataset.paths[indices[k]] for k in loaded], images


def write_output(path: str | None, text: str) -> None:
    from ..atomic import atomic_write_bytes

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
