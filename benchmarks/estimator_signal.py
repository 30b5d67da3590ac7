"""How well does each estimator's signal name an image's words? First-order gradient against exact loss.

Training scenes with an object at the top left get one fixed text, a full description of another
scene ("a large red circle at the top left and ..."), so slot 3 holds the colour and slot 4 the shape
of the object at the top left: the phrase context the decoder reads best. For each image, every
colour (and every shape) at that slot is ranked two ways:
- first-order: the gradient of the denoising loss with respect to the one-hot token (what
  Gumbel-softmax, straight-through and PEZ follow), summed over `--draws` noise draws;
- exact: the denoising loss with that word put in, on the same `k` noise draws for every word
  (what a zero-order search over words scores; commit 1a2e910 tried one for the encoder), k in 1, 2, 4.
The table gives how often the best-ranked word is the image's true one (chance: 1/8 colours, 1/5 shapes).

usage: python benchmarks/estimator_signal.py [--decoder bundled:decoder_a] [--scenes 128] [--threads N]
Writes benchmarks/results/estimator_signal.{md,json}.
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
from dediffusion.models.dediffusion import sample_generators
from dediffusion.world import render_batch, train_scenes
from dediffusion.world.scene import COLORS, SHAPES

STARTING_TEXT = (
    "a large red circle at the top left and a small blue square at the top right and "
    "a large green triangle at the bottom left on a gray background"
)
TIMESTEP_BIAS = 1.0  # training timesteps drawn with density ~ t (train.timestep_bias)
SLOTS = {"color": (2, tuple(COLORS)), "shape": (3, SHAPES)}  # 0-based positions in the starting text


def first_order_picks(decoder, images, onehot, slot, word_ids, draws, bias) -> torch.Tensor:
    """Index into `word_ids` of the word whose one-hot gradient is most negative, per image (B,)."""
    onehot = onehot.clone().requires_grad_()
    grad = torch.zeros_like(onehot)
    for draw in range(draws):
        generators = sample_generators([1000 * draw + b for b in range(len(images))], "cpu")
        loss = decoder.denoising_loss(images, decoder.soft_text_embeddings(onehot), generators, timestep_bias=bias)
        grad += torch.autograd.grad(loss.sum(), onehot)[0]
    return grad[:, slot, word_ids].argmin(-1)


@torch.no_grad()
def exact_picks(decoder, images, onehot, slot, word_ids, draws, bias) -> torch.Tensor:
    """Index into `word_ids` of the word with the lowest loss on the same `draws` noise draws (B,)."""
    losses = torch.zeros(len(word_ids), len(images))
    for draw in range(draws):
        for w, word in enumerate(word_ids):
            text = onehot.clone()
            text[:, slot] = 0
            text[:, slot, word] = 1
            generators = sample_generators([1000 * draw + b for b in range(len(images))], "cpu")
            losses[w] += decoder.denoising_loss(
                images, decoder.soft_text_embeddings(text), generators, timestep_bias=bias
            )
    return losses.argmin(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", default="bundled:decoder_a")
    parser.add_argument("--scenes", type=int, default=128)
    parser.add_argument("--draws", type=int, default=8, help="noise draws summed by the first-order ranking")
    parser.add_argument("--out", default="benchmarks/results/estimator_signal.json")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    ids = decoder.tokenizer(STARTING_TEXT, add_special_tokens=False).input_ids
    scenes = [s for s in train_scenes(20 * args.scenes, seed=123) if s.objects[0].position == "top left"]
    scenes = scenes[: args.scenes]
    images = render_batch(scenes, decoder.resolution)
    onehot = torch.zeros(len(scenes), len(ids), decoder.vocab_size)
    onehot[:, torch.arange(len(ids)), torch.tensor(ids)] = 1.0
    strings = decoder.token_strings()
    bias = TIMESTEP_BIAS
    rows = []
    for kind, (slot, words) in SLOTS.items():
        word_ids = [strings.index(w) for w in words]
        truth = torch.tensor([words.index(getattr(s.objects[0], kind)) for s in scenes])
        picks = {f"first-order ({args.draws} draws)": first_order_picks(decoder, images, onehot, slot, word_ids,
                                                                         args.draws, bias)}  # fmt: skip
        for draws in (1, 2, 4):
            picks[f"exact ({draws} draws)"] = exact_picks(decoder, images, onehot, slot, word_ids, draws, bias)
        for signal, pick in picks.items():
            rows.append({"kind": kind, "signal": signal, "right": float((pick == truth).float().mean()),
                         "chance": 1 / len(words)})  # fmt: skip
    record = {
        "decoder": args.decoder,
        "decoder_command": decoder_command(args.decoder),
        "scenes": len(scenes),
        "starting_text": STARTING_TEXT,
        "timestep_bias": bias,
        "rows": rows,
        "command": " ".join(["python benchmarks/estimator_signal.py", *sys.argv[1:]]),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(record))
    print(to_markdown(record))


def decoder_command(decoder: str) -> str | None:
    """The command recorded in the decoder folder's training.json, if it has one."""
    from dediffusion.assets import resolve

    record = Path(resolve(decoder)) / "training.json"
    return json.loads(record.read_text()).get("command") if record.is_file() else None


def to_markdown(record: dict) -> str:
    lines = [
        f"# Estimator signal: which word does each signal pick? (`{record['decoder']}`, {record['scenes']} scenes)",
        "",
        f"Decoder made by: `{record['decoder_command']}`.",
        f"Starting text: `{record['starting_text']}`; training timesteps drawn with bias {record['timestep_bias']}.",
        "Share of images whose true colour (slot 3) or shape (slot 4) of the top-left object is the word each "
        "signal ranks best.",
        "",
        "| attribute | signal | right | chance |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['kind']} | {r['signal']} | {100 * r['right']:.1f}% | {100 * r['chance']:.1f}% |" for r in record["rows"]
    ]
    lines += ["", f"- command: `{record['command']}`", f"- wall time: {record['wall_time_s']} s",
              f"- machine: {record['machine']}", f"- date: {record['date']}", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
