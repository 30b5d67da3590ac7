"""What every benchmark records beside its numbers: the command, the machine it ran on (shared with
`dediffusion evaluate`) and the date; and the writing of its JSON and Markdown results."""

import argparse
import datetime
import json
import sys
from pathlib import Path

from dediffusion.atomic import atomic_write_bytes
from dediffusion.eval.report import machine_info as machine

__all__ = ["benchmark_parser", "machine", "parse_args", "provenance", "provenance_lines", "write_results"]

RESULTS = Path(__file__).parent / "results"


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of the benchmark's docstring, with the options every
    benchmark has: `--threads` (torch CPU threads) and `--out` (the results folder)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    return parser


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line and apply `--threads`."""
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args


def provenance() -> dict:
    """The command line, machine and UTC date of this run."""
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"command": "python " + " ".join(sys.argv), "machine": machine(), "date": date}


def provenance_lines(record: dict) -> list[str]:
    """The Markdown lines that close a results table."""
    return ["", f"- command: `{record['command']}`", f"- machine: {record['machine']}", f"- date: {record['date']}", ""]


def write_results(out: Path, name: str, record: dict, markdown: str) -> None:
    """`out/name.json` and `out/name.md`, each written atomically; prints the Markdown."""
    atomic_write_bytes(out / f"{name}.json", json.dumps(record, indent=1).encode())
    atomic_write_bytes(out / f"{name}.md", markdown.encode())
    print(markdown)
