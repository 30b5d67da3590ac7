"""How far apart a decoder's latent puts scenes that differ in one fact: shape, colour or size.

The denoising loss weighs a latent direction by its length in the latent the UNet denoises (the VAE's
posterior mean times its scaling factor, unit variance overall). A fact whose change moves the latent
little barely lowers the loss when drawn right, so the UNet (and an encoder trained on that loss) has
little reason to get it right. For the first object of each test scene this changes one fact (the next
shape, another colour allowed on the background, the other size), keeps everything else (cell, jitter,
other objects) and measures the L2 distance between the two scenes' latents.

usage: python benchmarks/latent_separation.py DECODER [DECODER ...] [--scenes 200] [--name NAME]
Writes benchmarks/results/NAME.{md,json} (default NAME: latent_separation).
"""

import dataclasses

from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world import render_batch, test_scenes
from dediffusion.world.scene import ALLOWED_COLORS, SHAPES, SIZES

KINDS = ("shape", "color", "size")


def changed(scene, kind: str):
    """`scene` with its first object's `kind` set to another value (deterministic)."""
    first = scene.objects[0]
    if kind == "shape":
        value = SHAPES[(SHAPES.index(first.shape) + 1) % len(SHAPES)]
    elif kind == "size":
        value = SIZES[1 - SIZES.index(first.size)]
    else:
        taken = {obj.color for obj in scene.objects}
        value = next(c for c in ALLOWED_COLORS[scene.background] if c not in taken)
    objects = (dataclasses.replace(first, **{kind: value}),) + scene.objects[1:]
    return dataclasses.replace(scene, objects=objects)


def separation(path: str, scenes) -> dict:
    decoder = TextToImageDecoder.from_pretrained(path)
    base = decoder.to_latents(render_batch(scenes))
    row = {"latent_std": base.std().item()}
    for kind in KINDS:
        other = decoder.to_latents(render_batch([changed(s, kind) for s in scenes]))
        row[kind] = (other - base).flatten(1).norm(dim=1).mean().item()
    row["shape_over_color"] = row["shape"] / row["color"]
    return row


def to_markdown(record: dict) -> str:
    lines = [
        f"# Latent separation: mean L2 distance between the latents of {record['scenes']} test scenes and the "
        "same scenes with one fact of the first object changed",
        "",
        "| decoder | latent std | shape | colour | size | shape / colour |",
        "|---|---|---|---|---|---|",
    ]
    for path, r in record["decoders"].items():
        lines.append(
            f"| `{path}` | {r['latent_std']:.3f} | {r['shape']:.2f} | {r['color']:.2f} | {r['size']:.2f} "
            f"| {r['shape_over_color']:.2f} |"
        )
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("decoders", nargs="+")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--name", default="latent_separation")
    args = parse_args(parser)
    scenes = test_scenes(args.scenes)
    record = {"scenes": args.scenes, **provenance(), "decoders": {p: separation(p, scenes) for p in args.decoders}}
    write_results(args.out, args.name, record, to_markdown(record))
    print(to_markdown(record))


if __name__ == "__main__":
    main()
