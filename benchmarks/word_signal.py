"""Does a single loose word pay? The denoising loss a frozen decoder gives single-object test scenes
under text variants, per timestep (the same fixed noise for every variant).

The De-Diffusion encoder learns only from this loss. A word it may write at any place must lower the
loss on its own, beside the words already there (the background colour first); if only whole
phrases pay, the relaxed objective stays at "filler + background" (the world encoder's collapse).

usage: python benchmarks/word_signal.py DECODER_DIR [DECODER_DIR ...] [--scenes 64] [--name NAME]
Writes benchmarks/results/word_signal.{md,json} (one section per decoder; --name picks the files' stem).
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from record import machine  # the script's folder is on sys.path

from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.scene import COLORS

TIMESTEPS = [150, 300, 450, 600, 750, 900, 999]


def _wrong_color(scene):
    others = [c for c in COLORS if c != scene.objects[0].color]
    return others[(scene.objects[0].cell * 7 + len(scene.background)) % len(others)]


def _bag(*fields):  # loose words, in a fixed scrambled order: the object's words, then the background
    return lambda s: " ".join(str(f(s)) for f in fields)


BG = lambda s: s.background  # noqa: E731
COLOR = lambda s: s.objects[0].color  # noqa: E731
SHAPE = lambda s: s.objects[0].shape  # noqa: E731
POSITION = lambda s: s.objects[0].position  # noqa: E731
SIZE = lambda s: s.objects[0].size  # noqa: E731
VARIANTS = {
    "empty": lambda s: "",
    "bg": BG,
    "bg WRONG-colour": _bag(_wrong_color, BG),
    "bg colour": _bag(COLOR, BG),
    "bg position": _bag(POSITION, BG),
    "bg colour position": _bag(POSITION, COLOR, BG),
    "bg colour shape position": _bag(SHAPE, POSITION, COLOR, BG),
    "bg all words": _bag(SHAPE, POSITION, SIZE, COLOR, BG),
    "description": describe,
}


def word_signal(decoder_dir: str, num_scenes: int) -> dict:
    decoder = TextToImageDecoder.from_pretrained(decoder_dir)
    scenes = [s for s in test_scenes(20 * num_scenes) if len(s.objects) == 1][:num_scenes]
    images = render_batch(scenes)
    losses = {}
    with torch.no_grad():
        for name, text_of in VARIANTS.items():
            states = decoder.encode_text([text_of(s) for s in scenes])
            losses[name] = decoder.fixed_noise_loss(images, states, TIMESTEPS).mean(1).tolist()
    example = VARIANTS["bg all words"](scenes[0])
    record = Path(decoder_dir) / "training.json"  # how the decoder was made, when it says
    made_by = None
    if record.is_file():
        record = json.loads(record.read_text())
        made_by = f"{record.get('command')}` (p_loose {record.get('settings', {}).get('p_loose', 0.0)})"
    return {"decoder": decoder_dir, "made_by": made_by, "num_scenes": len(scenes), "losses": losses, "example": example}


def to_markdown(results: list[dict], command: str, info: dict) -> str:
    lines = ["# Word signal: denoising loss of single-object test scenes under text variants", ""]
    lines += [f"- command: `{command}`", f"- machine: {info}", ""]
    for r in results:
        lines += [f'## `{r["decoder"]}` ({r["num_scenes"]} scenes; loose words e.g. "{r["example"]}")', ""]
        lines += [f"made by `{r['made_by']}", ""] if r["made_by"] else []
        lines += ["| text | " + " | ".join(f"t={t}" for t in TIMESTEPS) + " | mean |"]
        lines += ["|---" * (len(TIMESTEPS) + 2) + "|"]
        for name, row in r["losses"].items():
            lines += [f"| {name} | " + " | ".join(f"{x:.4f}" for x in row) + f" | {sum(row) / len(row):.4f} |"]
        mean = {k: sum(v) / len(v) for k, v in r["losses"].items()}
        gain = mean["bg"] - mean["bg colour"]
        lines += [
            "",
            f"A right loose colour beside the background lowers the mean loss by {gain:.4f}; all loose "
            f"words reach {mean['bg all words']:.4f}, the description {mean['description']:.4f}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("decoders", nargs="+")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--name", default="word_signal")
    args = parser.parse_args()
    start = time.perf_counter()
    results = [word_signal(d, args.scenes) for d in args.decoders]
    info = {**machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - start, 1)}  # fmt: skip
    command = "python " + " ".join(sys.argv)
    out = Path(__file__).parent / "results"
    (out / f"{args.name}.json").write_text(json.dumps({"command": command, **info, "results": results}, indent=1))
    (out / f"{args.name}.md").write_text(to_markdown(results, command, info))
    print(to_markdown(results, command, info))


if __name__ == "__main__":
    main()
