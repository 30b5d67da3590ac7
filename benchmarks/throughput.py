"""Encoder and training throughput of De-Diffusion, with peak memory.

Configurations (random weights; speed does not depend on what the weights learned):
- `cpu`:  the CPU setup of the bundled world: 32 px images, a micro latent decoder (VAE /2,
          UNet (32, 64), 2-layer CLIP text encoder), conv backbone, 24 tokens.
- `sd2-base`: a decoder of Stable Diffusion 2-base size (UNet 865M, OpenCLIP-H text encoder 340M,
          SD VAE) at 256 px, EfficientNet-Lite0 encoder at 224 px, 75 tokens; bf16 frozen weights on GPU.

Usage:
    python benchmarks/throughput.py --config cpu --device cpu
    python benchmarks/throughput.py --config sd2-base --device cuda --batch-size 32
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
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dediffusion.config import load_config
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.micro import build_micro_decoder, word_tokenizer

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


def sd2_base_setup(dtype: torch.dtype):
    tokenizer = word_tokenizer([f"w{i}" for i in range(49404)], 77)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280),
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        latent_channels=4,
        scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", steps_offset=1
    )
    decoder = TextToImageDecoder(tokenizer, text, unet, scheduler, vae=vae, source="sd2-base-size").to(dtype=dtype)
    overrides = [
        "encoder.backbone=efficientnet_lite0",
        "encoder.image_size=224",
        "encoder.num_tokens=75",
        "encoder.width=512",
        "encoder.depth=5",
        "encoder.num_heads=8",
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
    parser.add_argument("--config", choices=("cpu", "sd2-base"), default="cpu")
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
    decoder, config = cpu_setup() if args.config == "cpu" else sd2_base_setup(dtype)
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
