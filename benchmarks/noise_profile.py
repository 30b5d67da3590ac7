"""Where a decoder loses each kind of fact along its sampling chain.

Each real test image is encoded to the decoder's latent, noised to timestep t0 with fixed noise, and
denoised from there with DDIM ("trailing" spacing, the steps of a 20-step chain that lie at or below
t0) conditioned on the image's full description. The perception model reads the result. At t0 = T - 1
this is ordinary generation from the description; at small t0 the decoder only has to keep what the
noisy image still shows. A fact kind that is lost at small t0 is one the UNet cannot draw even when
told and shown; one lost only near T is decided late by a model that never commits to it.

usage: python benchmarks/noise_profile.py [--decoder bundled:decoder_a ...] [--scenes 200] [--threads N]
       [--start-timesteps 100 250 ... 999] [--name NAME]
Writes benchmarks/results/NAME.{md,json} (default NAME: noise_profile).
"""

import torch
from record import (  # the script's folder is on sys.path
    benchmark_parser,
    parse_args,
    provenance,
    provenance_lines,
    write_results,
)

from dediffusion.eval.scene_accuracy import accuracy_by_kind, scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder, per_sample_randn
from dediffusion.world import describe, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel

START_TIMESTEPS = (100, 250, 400, 550, 700, 850, 999)
KINDS = ("background", "position", "shape", "color", "size")


@torch.no_grad()
def redraw_from(decoder, latents, cond, t0: int, guidance: float, noise: torch.Tensor, steps: int = 20):
    """Latents noised to the chain's first timestep <= t0, then denoised with classifier-free guidance."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(decoder.scheduler.config, timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    timesteps = [t for t in scheduler.timesteps if t <= t0]
    noisy = scheduler.add_noise(latents, noise, torch.full((latents.shape[0],), int(timesteps[0])))
    return decoder.from_latents(decoder.denoise_latents(noisy, cond, scheduler, timesteps, guidance)), int(timesteps[0])


def profile(decoder_path: str, scenes, perception, guidance: float, starts=START_TIMESTEPS) -> list[dict]:
    decoder = TextToImageDecoder.from_pretrained(decoder_path)
    n = len(scenes)
    with torch.no_grad():
        latents = decoder.to_latents(render_batch(scenes))
        cond = decoder.encode_text([describe(s) for s in scenes])
    noise = per_sample_randn(decoder.latent_shape, [torch.Generator().manual_seed(i) for i in range(n)], "cpu")
    rows = []
    for t0 in starts:
        images, first = redraw_from(decoder, latents, cond, t0, guidance, noise)
        predictions = perception.predict(images)
        by_kind = accuracy_by_kind(scenes, predictions)
        rows.append({"t0": first, "scene_accuracy": scene_accuracy(scenes, predictions),
                     **{kind: by_kind[kind] for kind in KINDS}})  # fmt: skip
        print(decoder_path, rows[-1], flush=True)
    return rows


def to_markdown(record: dict) -> str:
    lines = [
        f"# Noise profile: redraws of {record['scenes']} real test images from timestep t0, conditioned on "
        f"their descriptions (guidance {record['guidance_scale']:g})",
        "",
        "t0 = 999 is generation from the description; smaller t0 start from the noised real image.",
    ]
    for name, rows in record["decoders"].items():
        lines += ["", f"## `{name}`", "", "| t0 | scene accuracy | " + " | ".join(KINDS) + " |",
                  "|---" * (len(KINDS) + 2) + "|"]  # fmt: skip
        lines += [
            f"| {r['t0']} | {r['scene_accuracy']:.1%} | " + " | ".join(f"{r[k]:.1%}" for k in KINDS) + " |"
            for r in rows
        ]
    return "\n".join(lines + provenance_lines(record))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--decoder", nargs="+", default=["bundled:decoder_a"])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--start-timesteps", type=int, nargs="+", default=list(START_TIMESTEPS))
    parser.add_argument("--name", default="noise_profile")
    args = parse_args(parser)
    scenes = test_scenes(args.scenes)
    perception = PerceptionModel.load()
    record = {
        "scenes": args.scenes, "guidance_scale": args.guidance_scale, **provenance(),
        "decoders": {path: profile(path, scenes, perception, args.guidance_scale, args.start_timesteps)
            for path in args.decoder},
    }  # fmt: skip
    write_results(args.out, args.name, record, to_markdown(record))


if __name__ == "__main__":
    main()
