"""What every benchmark records beside its numbers: the command, the machine it ran on (shared with
`dediffusion evaluate`) and the date; and the writing of its JSON and Markdown results."""

import datetime
import json
import sys
from pathlib import Path

from dediffusion.atomic import atomic_write_bytes
from dediffusion.eval.report import machine_info as machine

__all__ = ["machine", "provenance", "provenance_lines", "write_results"]


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
