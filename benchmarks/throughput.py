"""Encoder and training throughput of De-Diffusion, with peak memory.

The CPU setup of the bundled world (random weights; speed does not depend on what the weights learned):
32 px images, a micro latent decoder (VAE /2, UNet (32, 64), 2-layer CLIP text encoder), conv backbone,
24 tokens. The Stable Diffusion 2-base size on a GPU is `gpu_throughput.py`'s.

Usage:
    python benchmarks/throughput.py --config cpu --device cpu
Writes `benchmarks/results/throughput-<config>-<device>[-<N>thread].{json,md}` (or under `--out DIR`)
with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from dediffusion.config import load_config
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.micro import build_micro_decoder

RESULTS = Path(__file__).parent / "results"


def cpu_setup():
    decoder = build_micro_decoder(
        [f"w{i}" for i in range(60)], resolution=32, latent=True, max_length=32, text_width=64, unet_channels=(32, 64)
    )
    overrides = [
        "encoder.backbone=conv",
        "encoder.image_size=32",
        "encoder.num_tokens=24",
        "encoder.width=128",
        "encoder.depth=2",
        "encoder.num_heads=4",
    ]
    return decoder, load_config(None, overrides)


def timed(fn, repeats: int, device: str) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(model: DeDiffusion, batch_size: int, repeats: int, device: str, autocast: bool) -> dict:
    size = model.decoder.resolution
    images = torch.rand(batch_size, 3, size, size, device=device) * 2 - 1
    optimizer = torch.optim.AdamW([p for p in model.encoder.parameters() if p.requires_grad], lr=1e-4)
    seeds = torch.arange(batch_size)
    context = torch.autocast(device, dtype=torch.bfloat16, enabled=autocast)

    def encode():
        with torch.no_grad(), context:
            model.encode_tokens(images)

    def train_step():
        with context:
            loss = model(images, seeds, 0)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    encode_s = timed(encode, repeats, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_s = timed(train_step, repeats, device)
    return {
        "encode_images_per_s": batch_size / encode_s,
        "train_images_per_s": batch_size / train_s,
        "train_step_s": train_s,
        "peak_memory_mb": peak_memory_mb(device),
    }


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {platform.node()}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("cpu",), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--note", default="", help="conditions worth recording beside the numbers")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gpu = args.device == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    decoder, config = cpu_setup()
    if args.gradient_checkpointing:
        decoder.unet.enable_gradient_checkpointing()
    model = DeDiffusion(config, decoder.to(args.device)).to(args.device)
    result = measure(model, args.batch_size, args.repeats, args.device, autocast=gpu)
    result.update(
        config=args.config,
        batch_size=args.batch_size,
        decoder_dtype=str(dtype),
        trainable_params=sum(p.numel() for p in model.encoder.parameters() if p.requires_grad),
        decoder_params=sum(p.numel() for p in decoder.parameters()),
        command="python " + " ".join(sys.argv),
        note=args.note,
        machine=machine(args.device),
        torch=torch.__version__,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    suffix = f"-{args.threads}thread" if args.threads else ""
    write(result, args.out, f"throughput-{args.config}-{args.device}{suffix}")


def write(result: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "| config | batch | encode images/s | train images/s | train step s | peak memory MB |",
        "|---|---|---|---|---|---|",
        f"| {result['config']} | {result['batch_size']} | {result['encode_images_per_s']:.1f} | "
        f"{result['train_images_per_s']:.1f} | {result['train_step_s']:.3f} | {result['peak_memory_mb']:.0f} |",
    ]
    meta = [
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; torch {result['torch']}; decoder weights {result['decoder_dtype']}",
        f"- trainable encoder parameters: {result['trainable_params']:,}; frozen decoder parameters: "
        f"{result['decoder_params']:,}",
        f"- date: {result['date']}",
    ] + ([f"- note: {result['note']}"] if result.get("note") else [])
    (out / f"{name}.md").write_text("\n".join(rows + meta) + "\n")
    print("\n".join(rows + meta))


if __name__ == "__main__":
    main()
