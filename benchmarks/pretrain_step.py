"""Time one optimiser step of each world decoder's pretraining, on 1 and on 2 threads.

Where the reproduction time goes (`reproduce_world.py` gives the whole commands): decoder A's VAE
step (batch 32, with the shape-in-latents hinge), decoder A's UNet + text-encoder step (batch 64),
decoder B's UNet step (batch 32) and, inside it, B's frozen MiniLM forward alone. Fresh weights at
the bundled architectures and batch sizes; each figure is the mean of `--repeats` steps after one
warm-up step, without EMA, clipping or checkpoints (the commands' own steps take somewhat longer).

usage: python benchmarks/pretrain_step.py [--repeats 5] [--name pretrain_step]
"""

import time

import torch
from record import benchmark_parser, parse_args, provenance, provenance_lines, write_results

from dediffusion.models.dediffusion import sample_generators
from dediffusion.models.micro import build_micro_decoder
from dediffusion.train.pretrain import _vae_loss
from dediffusion.world.decoder_b import MAX_LENGTH, build_decoder_b
from dediffusion.world.decoders import DECODER_A_CONFIG, VOCABULARY, shape_latent_loss, world_sampler


def mean_ms(step, repeats: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1000


def denoising_step(decoder, images, captions, trained, grad_text: bool):
    params = [p for part in trained for p in part.parameters()]
    for part in trained:
        part.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step():
        with torch.set_grad_enabled(grad_text):
            states = decoder.encode_text(captions)
        generators = sample_generators(range(len(captions)), decoder.device)
        loss = decoder.denoising_loss(images, states, generators, timestep_bias=3.0).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def steps_ms(repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    decoder_a = build_micro_decoder(VOCABULARY, **DECODER_A_CONFIG)
    vae_images = world_sampler(1)(32, 0)[0]
    shape_loss = shape_latent_loss(1, 32, 0.1, margin=0.2)
    vae = decoder_a.vae.requires_grad_(True)
    vae_optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def vae_step():
        loss, means = _vae_loss(vae, vae_images, "mse", 1e-6)
        loss = loss + shape_loss(means, 0)
        vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        vae_optimizer.step()

    results = {"decoder A: VAE step (batch 32)": mean_ms(vae_step, repeats)}
    vae.requires_grad_(False)
    images, captions = world_sampler(0, p_full=0.5, p_loose=0.5)(64, 0)
    step = denoising_step(decoder_a, images, captions, [decoder_a.unet, decoder_a.text_encoder], grad_text=True)
    results["decoder A: UNet + text encoder step (batch 64)"] = mean_ms(step, repeats)
    decoder_b = build_decoder_b(None, MAX_LENGTH)
    images, captions = world_sampler(1, p_empty=0.1, p_full=0.5)(32, 0)
    step = denoising_step(decoder_b, images, captions, [decoder_b.unet], grad_text=False)
    results["decoder B: UNet step (batch 32)"] = mean_ms(step, repeats)
    with torch.no_grad():
        results["decoder B: its frozen MiniLM alone (32 captions)"] = mean_ms(
            lambda: decoder_b.encode_text(captions), repeats
        )
    return results


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--name", default="pretrain_step")
    args = parse_args(parser)
    by_threads = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        by_threads[threads] = steps_ms(args.repeats)
    record = {**provenance(), "repeats": args.repeats, "ms": by_threads}
    lines = [
        "# One pretraining step of each world decoder (ms)",
        "",
        "| step | 1 thread | 2 threads | speed-up |",
        "|---|---|---|---|",
    ]
    for key, one in by_threads[1].items():
        two = by_threads[2][key]
        lines.append(f"| {key} | {one:.0f} | {two:.0f} | {one / two:.2f}x |")
    lines += provenance_lines(record)
    write_results(args.out, args.name, record, "\n".join(lines))


if __name__ == "__main__":
    main()
