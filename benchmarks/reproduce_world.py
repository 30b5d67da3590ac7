"""Reproduce every bundled world artifact from scratch, one after another, and time each command.

Runs the commands of the README's reproduction table in one chain on this machine, each with
`--threads` torch threads (default 2: the whole 2-core host, one artifact at a time), into OUT_DIR:

    dediffusion world sample -n 20000 OUT/world-images
    dediffusion world pretrain-decoder a --out OUT/decoder_a
    dediffusion train --preset world --set train.data=OUT/world-images --set decoder.path=OUT/decoder_a ...
    dediffusion world pretrain-decoder b --out OUT/decoder_b
    dediffusion world pretrain-perception --out OUT/perception

and writes the wall time of each and their sum to `results/NAME.md` and `.json`, after every artifact.
Interrupted, rerun the same command: finished artifacts are skipped (their time is read from the
run's own record and marked so) and an unfinished one continues from its checkpoints. `--report`
runs nothing and reports what OUT_DIR holds. The encoder is trained against the
decoder A made here, as the bundled one was against the bundled decoder A.
"""

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results


def chain(out: Path, threads: int) -> list[tuple[str, list[str], Path]]:
    """(artifact, command, the file that says it is finished) in the order they run."""
    threads_flag = ["--threads", str(threads)]
    images, decoder_a = out / "world-images", out / "decoder_a"
    encoder = [
        "train", "--preset", "world", "--set", f"train.data={images}", "--set", f"decoder.path={decoder_a}",
        "-o", str(out / "world_encoder"), *threads_flag,
    ]  # fmt: skip
    return [
        ("world images", ["world", "sample", "-n", "20000", "-o", str(images)], images / "descriptions.jsonl"),
        ("decoder_a", ["world", "pretrain-decoder", "a", "-o", str(decoder_a), *threads_flag],
         decoder_a / "training.json"),
        ("world_encoder", encoder, out / "world_encoder" / "final" / "training.json"),
        ("decoder_b", ["world", "pretrain-decoder", "b", "-o", str(out / "decoder_b"), *threads_flag],
         out / "decoder_b" / "training.json"),
        ("perception", ["world", "pretrain-perception", "-o", str(out / "perception"), *threads_flag],
         out / "perception" / "config.json"),
    ]  # fmt: skip


def recorded_seconds(done: Path) -> float | None:
    """The wall time a finished artifact recorded about itself, if it did."""
    try:
        record = json.loads(done.read_text())
        return float(record.get("wall_time_s", record.get("metadata", {}).get("wall_time_s")))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def resume_flags(name: str, out: Path) -> list[str]:
    """`dediffusion train` continues only when asked to; the decoders resume by themselves."""
    if name == "world_encoder" and any((out / "world_encoder").glob("checkpoints/*")):
        return ["--resume", "latest"]
    return []


def write_report(args, rows: list[dict]) -> None:
    """The results so far (written after every artifact, so an interrupted chain keeps what finished)."""
    finished = [row for row in rows if row["seconds"] is not None]
    total = sum(row["seconds"] for row in finished)
    complete = len(finished) == len(rows) == len(chain(args.out_dir, args.threads))
    record = {
        **provenance(), "threads": args.threads, "out_dir": str(args.out_dir), "rows": rows, "total_s": total,
        "complete": complete,
    }  # fmt: skip
    lines = [
        f"# Every bundled world artifact reproduced from scratch, one after another ({args.threads} threads)",
        "",
        "| artifact | wall time (min) | command |",
        "|---|---|---|",
    ]
    notes = {"ran": "", "recorded": " (from its own record: an earlier run)", "not run": "not run"}
    for row in rows:
        minutes = "" if row["seconds"] is None else f"{row['seconds'] / 60:.1f}"
        command = f"`dediffusion {shlex.join(row['command'])}`"
        lines.append(f"| {row['artifact']} | {minutes}{notes[row['status']]} | {command} |")
    summary = "Total" if complete else "Not complete; the finished artifacts together"
    lines += ["", f"{summary}: {total / 60:.1f} minutes.", *provenance_lines(record)]
    write_results(args.out, args.name, record, "\n".join(lines))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("out_dir", type=Path, help="folder for the reproduced artifacts")
    parser.add_argument("--name", default="reproduce_world", help="results file name")
    parser.add_argument("--report", action="store_true", help="run nothing: report what OUT_DIR holds")
    parser.set_defaults(threads=2)
    args = parse_args(parser)
    rows = []
    for name, command, done in chain(args.out_dir, args.threads):
        row = {"artifact": name, "command": command}
        if done.exists():
            rows.append({**row, "seconds": recorded_seconds(done), "status": "recorded"})
            print(f"{name}: already there ({done}), skipped", flush=True)
            continue
        if args.report:
            rows.append({**row, "seconds": None, "status": "not run"})
            continue
        argv = [sys.executable, "-m", "dediffusion", *command, *resume_flags(name, args.out_dir)]
        print(f"{name}: {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(argv)
        if result.returncode != 0:
            sys.exit(f"{name} failed (exit {result.returncode}); rerun this command to continue from its checkpoints")
        rows.append({**row, "seconds": time.perf_counter() - start, "status": "ran"})
        write_report(args, rows)
    write_report(args, rows)


if __name__ == "__main__":
    main()
