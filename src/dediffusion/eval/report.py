"""The evaluation report: `report.json` (the whole record), `report.md` (tables) and plots.

`write_report(record, out_dir)` writes all three; the plots need matplotlib (the `eval` extra) and
are left out, with a note in the Markdown, when it is not installed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..records import cpu_description

logger = logging.getLogger(__name__)


def machine_info() -> dict:
    """What every result records beside its numbers: the machine it ran on."""
    import platform

    import torch

    return {
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_description(),
        "uname": " ".join(platform.uname()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def write_report(record: dict, out_dir: Path) -> Path:
    """Write report.json, the plots and report.md into `out_dir`; returns the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record["plots"] = write_plots(record, out_dir)
    atomic_write_bytes(out_dir / "report.json", (json.dumps(record, indent=2) + "\n").encode())
    path = out_dir / "report.md"
    atomic_write_bytes(path, to_markdown(record).encode())
    return path


def to_markdown(record: dict) -> str:
    lines = [f"# De-Diffusion evaluation ({record['num_images']} {'world test' if record['world'] else 'user'} images)"]
    lines += _reconstruction(record) + _cost(record) + _ablation(record) + _few_shot(record) + _qa(record)
    lines += _examples(record) + _footer(record)
    return "\n".join(lines) + "\n"


def _percent(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _reconstruction(record: dict) -> list[str]:
    scales = record["settings"]["guidance_scales"]
    lines = [
        "",
        "## Reconstruction and transfer",
        "",
        "Best over the guidance sweep (scene accuracy: higher is better; FD-EffNet: lower is better).",
        "Decoder A is the encoder's own decoder; decoder B never took part in training.",
        "",
    ]
    decoders = list(record["reconstruction"])
    lines += ["| prompt source | " + " | ".join(f"{d} scene acc | {d} FD-EffNet" for d in decoders) + " |"]
    lines += ["|---|" + "---|---|" * len(decoders)]
    for source in record["reconstruction"][decoders[0]]["best"]:
        cells = []
        for d in decoders:
            best = record["reconstruction"][d]["best"][source]
            acc_g = best["scene_accuracy_guidance"]
            cells.append(_percent(best["scene_accuracy"]) + ("" if acc_g is None else f" (g={acc_g:g})"))
            cells.append(f"{best['fd_effnet']:.2f} (g={best['fd_effnet_guidance']:g})")
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    for d in decoders:
        lines += ["", f"### {d}: every guidance scale (scene accuracy / FD-EffNet)", ""]
        lines += ["| prompt source | " + " | ".join(f"g={s:g}" for s in scales) + " |", "|---|" + "---|" * len(scales)]
        for source, by_scale in record["reconstruction"][d]["cells"].items():
            shown = [by_scale[str(float(s))] for s in scales]
            lines.append(
                f"| {source} | "
                + " | ".join(f"{_percent(c['scene_accuracy'])} / {c['fd_effnet']:.2f}" for c in shown)
                + " |"
            )
    for d in decoders:
        lines += accuracy_by_kind_table(record["reconstruction"][d]["best"], d, record.get("objects_per_image"))
    if "guidance_sweep" in record.get("plots", {}):
        lines += ["", f"![guidance sweep]({record['plots']['guidance_sweep']})"]
    return lines


def accuracy_by_kind_table(best: dict, decoder: str, true_objects: float | None = None) -> list[str]:
    """Markdown: each prompt source's scene accuracy split by fact kind, and the objects per image the
    perception model reads in its redraws, at its best guidance scale (`true_objects`: the originals'
    count); nothing when no source has an answer key."""
    rows = {source: row for source, row in best.items() if row.get("accuracy_by_kind")}
    if not rows:
        return []
    kinds = list(next(iter(rows.values()))["accuracy_by_kind"])
    counted = all(row.get("objects_per_image") is not None for row in rows.values())  # older records lack it
    lines = ["", f"### {decoder}: scene accuracy by fact kind (at each source's best guidance)", ""]
    header = ["all facts (pooled)" if k == "all" else k for k in kinds] + ["objects per image"] * counted
    lines += ["| prompt source | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for source, row in rows.items():
        cells = [_percent(row["accuracy_by_kind"][k]) for k in kinds] + [f"{row['objects_per_image']:.2f}"] * counted
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    if counted and true_objects is not None:
        lines += ["", f"The original images hold {true_objects:.2f} objects per image."]
    return lines


def _cost(record: dict) -> list[str]:
    c = record["cost"]
    acc = c["scene_accuracy_a"]
    return [
        "",
        "## Cost: one encoder pass against per-image prompt optimisation",
        "",
        "| method | images/s | scene accuracy (decoder A) |",
        "|---|---|---|",
        f"| De-Diffusion encoder | {c['encoder_images_per_s']:.1f} | {_percent(acc['De-Diffusion'])} |",
        f"| prompt inversion ({c['inversion_steps']} steps) | {c['inversion_images_per_s']:.3f} | "
        f"{_percent(acc['prompt inversion'])} |",
        "",
        f"The encoder is **{c['speedup']:.0f}x** faster per image on this machine.",
    ]


def _ablation(record: dict) -> list[str]:
    rows = record["token_ablation"]
    lines = ["", "## Token-length ablation", ""]
    if len(rows) < 2:
        lines += ["Only one encoder was given: pass `--ablation-model DIR` (encoders with other `num_tokens`).", ""]
    decoders = [d for d in record["reconstruction"]]
    columns = " | ".join(f"{d} scene acc | {d} FD-EffNet" for d in decoders)
    lines += [f"| tokens | steps | model | {columns} | few-shot shape | few-shot colour |",
              "|---|---|---|" + "---|---|" * len(decoders) + "---|---|"]  # fmt: skip
    for row in rows:
        cells = [f"{_percent(row[d]['scene_accuracy'])} | {row[d]['fd_effnet']:.2f}" for d in decoders]
        shot = row["few_shot"].get("De-Diffusion", {})
        few = [_percent(shot.get(a)) for a in ("shape", "color")]
        steps = _training_budget(row)
        lines.append(f"| {row['num_tokens']} | {steps} | `{row['model']}` | " + " | ".join(cells + few) + " |")
    if "token_ablation" in record.get("plots", {}):
        lines += ["", f"![token ablation]({record['plots']['token_ablation']})"]
    return lines


def _training_budget(row: dict) -> str:
    """An ablation row's training, e.g. `960 sleep + 150 wake` (the wake steps alone without a sleep phase)."""
    sleep, wake = row.get("sleep_steps", 0), row.get("steps", "")
    return f"{sleep} sleep + {wake} wake" if sleep else str(wake)


def _few_shot(record: dict) -> list[str]:
    shot = record["few_shot"]
    lines = ["", "## Few-shot classification from text (5-way 1-shot, main object)", ""]
    if "skipped" in shot:
        return lines + [shot["skipped"]]
    lines += [
        f"{shot['episodes']} episodes over {shot['num_scenes']} single-object test scenes; a query takes the "
        "label of the nearest example (MiniLM sentence embeddings, cosine). Chance is 20%.",
        "",
        "| text | shape | colour |",
        "|---|---|---|",
    ]
    for source in ("blind", "human", "De-Diffusion", "description"):
        if source in shot:
            lines.append(f"| {source} | {_percent(shot[source]['shape'])} | {_percent(shot[source]['color'])} |")
    return lines


def _qa(record: dict) -> list[str]:
    qa = record["qa"]
    lines = ["", "## Question answering with a text-only LLM", ""]
    if "skipped" in qa:
        return lines + [qa["skipped"]]
    shots = list(qa["shots"])
    lines += [
        f"LLM `{qa['llm']}`; {qa['num_questions']} questions about {qa['num_scenes']} test scenes; answers ranked "
        "over the closed answer set, calibrated against the context-free prior.",
        "",
        "| picture given as | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|" + "---|" * len(shots),
    ]
    for source in qa["shots"][shots[0]]:
        lines.append(f"| {source} | " + " | ".join(_percent(qa["shots"][k][source]["accuracy"]) for k in shots) + " |")
    kinds = list(qa["shots"][shots[0]]["blind"]["by_kind"])
    lines += ["", "Zero-shot accuracy by question kind:", "", "| picture given as | " + " | ".join(kinds) + " |"]
    lines.append("|---|" + "---|" * len(kinds))
    for source, result in qa["shots"][shots[0]].items():
        lines.append(f"| {source} | " + " | ".join(_percent(result["by_kind"][k]["accuracy"]) for k in kinds) + " |")
    lines += ["", f"Question answering took {qa['wall_time_s']:.0f} s."]
    return lines


def _examples(record: dict) -> list[str]:
    lines = ["", "## Examples", ""]
    for source, name in record.get("grids", {}).items():
        lines += [f"{source}:", "", f"![{source}]({name})", ""]
    for source, texts in record["texts"].items():
        lines += [f"- {source}: " + "; ".join(f"`{t}`" for t in texts[:3])]
    return lines


def _footer(record: dict) -> list[str]:
    m = record.get("machine", {})
    return [
        "",
        f"- command: `{record.get('command', '')}`",
        f"- wall time without question answering: {record['wall_time_s']:.0f} s "
        f"(redraws in {record['settings'].get('draw_dtype', 'float32')})",
        f"- machine: {m.get('uname', '?')}; torch {m.get('torch', '?')}, {m.get('torch_threads', '?')} threads",
        f"- date: {record.get('date', '?')}",
        f"- plots: {'see above' if record.get('plots') else 'not drawn (pip install matplotlib)'}",
    ]


def write_plots(record: dict, out_dir: Path) -> dict[str, str]:
    """guidance_sweep.png and token_ablation.png; {} when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: the report has no plots (pip install matplotlib)")
        return {}
    plots = {"guidance_sweep": _plot_sweep(plt, record, out_dir / "guidance_sweep.png")}
    if len(record["token_ablation"]) > 1:
        plots["token_ablation"] = _plot_ablation(plt, record, out_dir / "token_ablation.png")
    return plots


def _plot_sweep(plt, record: dict, path: Path) -> str:
    scales = record["settings"]["guidance_scales"]
    decoders = list(record["reconstruction"])
    figure, axes = plt.subplots(2, len(decoders), figsize=(5 * len(decoders), 7), squeeze=False)
    for column, d in enumerate(decoders):
        for source, by_scale in record["reconstruction"][d]["cells"].items():
            cells = [by_scale[str(float(s))] for s in scales]
            if cells[0]["scene_accuracy"] is not None:
                axes[0][column].plot(scales, [100 * c["scene_accuracy"] for c in cells], marker="o", label=source)
            axes[1][column].plot(scales, [c["fd_effnet"] for c in cells], marker="o", label=source)
        axes[0][column].set(title=d.replace("_", " "), ylabel="scene accuracy (%)")
        axes[1][column].set(xlabel="guidance scale", ylabel="FD-EffNet")
    axes[1][0].legend(fontsize=8)
    return _save(plt, figure, path)


def _plot_ablation(plt, record: dict, path: Path) -> str:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    # one line per training length: encoders trained for other step counts are not points of the same curve
    runs = sorted({_training_budget(r) for r in record["token_ablation"]})
    for budget in runs:
        rows = [r for r in record["token_ablation"] if _training_budget(r) == budget]
        tokens, trained = [r["num_tokens"] for r in rows], f" ({budget} steps)" if len(runs) > 1 else ""
        for d in record["reconstruction"]:
            if rows[0][d]["scene_accuracy"] is not None:
                scores = [100 * r[d]["scene_accuracy"] for r in rows]
                axes[0].plot(tokens, scores, marker="o", label=f"{d}{trained}")
            axes[1].plot(tokens, [r[d]["fd_effnet"] for r in rows], marker="o", label=f"{d}{trained}")
    axes[0].set(xlabel="tokens", ylabel="scene accuracy (%)")
    axes[1].set(xlabel="tokens", ylabel="FD-EffNet")
    for axis in axes:
        axis.set_xscale("log", base=2)
        axis.legend(fontsize=8)
    return _save(plt, figure, path)


def _save(plt, figure, path: Path) -> str:
    import io

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name
