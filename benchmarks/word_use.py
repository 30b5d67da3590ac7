"""Does a decoder draw what each kind of word says? A swapped-word test on the UNet's clean estimate.

Each real test image is encoded to the decoder's latent and noised to timestep t with fixed noise. The
UNet estimates the clean latents once conditioned on the image's full description, and once on the
description with every object's shape (or colour, or size) word replaced by another value of that
kind; the perception model reads the decoded estimates. "follows" is the share of objects read with
the swapped value when the swapped description is given: near 0 means the UNet ignores that kind of
word at that noise level and only keeps what the noisy image shows. "true" is that kind's accuracy
with the true description.

usage: python benchmarks/word_use.py [--decoder bundled:decoder_a ...] [--scenes 200] [--threads N]
Writes benchmarks/results/word_use.{md,json}.
"""

import dataclasses

import torch
from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion.models.decoder import TextToImageDecoder, per_sample_randn
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.perception import VOCABULARIES, PerceptionModel, scene_targets
from dediffusion.world.scene import ALLOWED_COLORS, SHAPES, SIZES

TIMESTEPS = (300, 500, 700, 900)
KINDS = ("shape", "color", "size")


def swapped(scene, kind: str):
    """`scene` with every object's `kind` replaced by the next value the world allows there."""

    def other(obj):
        values = {"shape": SHAPES, "size": SIZES, "color": ALLOWED_COLORS[scene.background]}[kind]
        return dataclasses.replace(obj, **{kind: values[(values.index(getattr(obj, kind)) + 1) % len(values)]})

    return dataclasses.replace(scene, objects=tuple(other(obj) for obj in scene.objects))


def read_kind(perception, images: torch.Tensor, targets: torch.Tensor, kind: str) -> float:
    """Share of occupied cells whose `kind` the perception model reads as `targets` says."""
    with torch.no_grad():
        predicted = perception(images)[kind].argmax(-1)
    occupied = targets != -100
    return (predicted[occupied] == targets[occupied]).float().mean().item()


def profile(decoder_path: str, scenes, perception) -> list[dict]:
    decoder = TextToImageDecoder.from_pretrained(decoder_path)
    n = len(scenes)
    with torch.no_grad():
        latents = decoder.to_latents(render_batch(scenes))
        states = {"true": decoder.encode_text([describe(s) for s in scenes])}
        for kind in KINDS:
            states[kind] = decoder.encode_text([describe(swapped(s, kind)) for s in scenes])
    noise = per_sample_randn(decoder.latent_shape, [torch.Generator().manual_seed(i) for i in range(n)], "cpu")
    true_targets = scene_targets(scenes)
    rows = []
    for t in TIMESTEPS:
        timesteps = torch.full((n,), t)
        noisy = decoder.scheduler.add_noise(latents, noise, timesteps)
        with torch.no_grad():
            estimates = {k: decoder.predict_clean_latents(noisy, s, timesteps) for k, s in states.items()}
            images = {k: decoder.from_latents(latent) for k, latent in estimates.items()}
        row = {"t": t}
        for kind in KINDS:
            swapped_targets = scene_targets([swapped(s, kind) for s in scenes])
            row[f"{kind}_true"] = read_kind(perception, images["true"], true_targets[kind], kind)
            row[f"{kind}_follows"] = read_kind(perception, images[kind], swapped_targets[kind], kind)
        rows.append(row)
        print(decoder_path, row, flush=True)
    return rows


def to_markdown(record: dict) -> str:
    lines = [
        f"# Word use: does the UNet's clean estimate follow swapped words? ({record['scenes']} test images)",
        "",
        "Per noise level t: accuracy of each kind with the true description / share of objects drawn with "
        "the swapped value when that kind's words are swapped (0: the word is ignored). Chance for the "
        f"swapped value: shape {1 / len(VOCABULARIES['shape']):.0%}, size {1 / len(VOCABULARIES['size']):.0%}.",
    ]
    for name, rows in record["decoders"].items():
        lines += ["", f"## `{name}`", "", "| t | " + " | ".join(f"{k} true / follows" for k in KINDS) + " |",
                  "|---" * (len(KINDS) + 1) + "|"]  # fmt: skip
        lines += [
            f"| {r['t']} | " + " | ".join(f"{r[k + '_true']:.1%} / {r[k + '_follows']:.1%}" for k in KINDS) + " |"
            for r in rows
        ]
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--decoder", nargs="+", default=["bundled:decoder_a"])
    parser.add_argument("--scenes", type=int, default=200)
    args = parse_args(parser)
    scenes = test_scenes(args.scenes)
    perception = PerceptionModel.load()
    record = {
        "scenes": args.scenes, **provenance(),
        "decoders": {path: profile(path, scenes, perception) for path in args.decoder},
    }  # fmt: skip
    write_results(args.out, "word_use", record, to_markdown(record))


if __name__ == "__main__":
    main()
