"""GPU training throughput of De-Diffusion against a Stable-Diffusion-2-base-shaped decoder, per GPU, with peak memory.

The decoder has SD 2-base's real architecture (the configs of stabilityai/stable-diffusion-2-base's UNet,
OpenCLIP-H text encoder, VAE and scheduler are written out below) with random weights, so nothing is
downloaded: speed does not depend on what the weights learned. Images are 256 px (32x32 latents); the
encoder is the paper's size (a 5-block attentional pooler of width 1024 and a head over the 49,408-token
vocabulary: about 140M trainable parameters, the paper's 135M) on a frozen EfficientNet-Lite0 at 224 px,
writing 75 tokens.
On a GPU the frozen decoder is bf16 and the step runs under bf16 autocast (the sd2-base preset's
`mixed_precision: bf16`); the encoder's weights stay fp32.

One process, one device: images/s is per GPU (under data parallelism each GPU runs this step on its share
of the batch). The paper trains at 2048 images per step on 512 TPU chips: 74 images/s per chip is the
rate to meet on one H100, 150 the stretch.

Usage:
    python benchmarks/gpu_throughput.py --batch-size 64                 # on a GPU
    python benchmarks/gpu_throughput.py --toy --device cpu --threads 2  # seconds on a CPU: the same code path
Writes `benchmarks/results/gpu_throughput[-toy]-<device>.{json,md}` (or under `--out DIR`) with the card's
name, the command and the date.
"""

from __future__ import annotations

import resource
import statistics
import time

import torch
from record import benchmark_parser, provenance, provenance_lines, write_results  # the script's folder is on sys.path

# stabilityai/stable-diffusion-2-base: unet/config.json (sample_size 64 is its 512 px; 32 here is 256 px)
SD2_BASE_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)
# text_encoder/config.json: OpenCLIP ViT-H/14's text tower, 23 of its 24 layers (SD 2 reads the penultimate)
SD2_BASE_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
# vae/config.json
SD2_BASE_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)
# scheduler/scheduler_config.json (the training noise schedule; SD 2-base predicts epsilon)
SD2_BASE_SCHEDULER = dict(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="epsilon", steps_offset=1
)
# the paper's encoder size: 5 pooler blocks of width 1024, 75 tokens (the frozen backbone is ours, not CoCa ViT-L)
PAPER_ENCODER = dict(
    backbone="efficientnet_lite0", image_size=224, num_tokens=75, width=1024, depth=5, num_heads=16, mlp_ratio=4.0
)

# --toy: the same classes and code path at a size a CPU runs in seconds
TOY_UNET = dict(
    SD2_BASE_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64, 64),
    attention_head_dim=(2, 2, 4, 4),
    cross_attention_dim=32,
    layers_per_block=1,
    norm_num_groups=8,
)
TOY_TEXT = dict(SD2_BASE_TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TOY_VAE = dict(SD2_BASE_VAE, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64)
TOY_ENCODER = dict(
    backbone="conv", backbone_channels=(8, 16), image_size=32, num_tokens=75, width=32, depth=1, num_heads=2
)
TOY_WORDS = 200  # the toy tokenizer's vocabulary; the full one has SD 2's 49,408 ids


def build_decoder(toy: bool, device: str, dtype: torch.dtype):
    """A frozen `TextToImageDecoder` of SD 2-base's architecture (or the toy's), random weights."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from dediffusion.models.decoder import TextToImageDecoder
    from dediffusion.models.micro import word_tokenizer

    text_config = TOY_TEXT if toy else SD2_BASE_TEXT
    words = TOY_WORDS if toy else text_config["vocab_size"] - 4  # word_tokenizer adds 4 special tokens
    tokenizer = word_tokenizer([f"w{i}" for i in range(words)], text_config["max_position_embeddings"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**dict(text_config, vocab_size=len(tokenizer))))
    unet = UNet2DConditionModel(**(TOY_UNET if toy else SD2_BASE_UNET))
    vae = AutoencoderKL(**(TOY_VAE if toy else SD2_BASE_VAE))
    decoder = TextToImageDecoder(tokenizer, text_encoder, unet, DDPMScheduler(**SD2_BASE_SCHEDULER), vae=vae)
    return decoder.to(device=device, dtype=dtype)


def build_model(toy: bool, device: str, gradient_checkpointing: bool):
    from dediffusion.config import load_config
    from dediffusion.models.dediffusion import DeDiffusion

    gpu = torch.device(device).type == "cuda"
    decoder = build_decoder(toy, device, torch.bfloat16 if gpu else torch.float32)
    if gradient_checkpointing:
        decoder.unet.enable_gradient_checkpointing()
    encoder = TOY_ENCODER if toy else PAPER_ENCODER
    overrides = [f"encoder.{key}={list(v) if isinstance(v, tuple) else v}" for key, v in encoder.items()]
    # random images never repeat, as at the paper's scale: no feature cache; the backbone is a real one
    # only at full size (the toy uses the conv backbone, so it needs no weights package)
    overrides += ["encoder.cache_features=false"]
    return DeDiffusion(load_config(None, overrides), decoder).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training(model, batch_size: int, steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` training steps (encoder forward, Gumbel text, frozen decoder's loss,
    backward, AdamW) after `warmup` untimed ones; a fresh random batch per step."""
    device = model.device
    parameters = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    size = model.decoder.resolution
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for step in range(warmup + steps):
        images = torch.rand(batch_size, 3, size, size, device=device) * 2 - 1
        seeds = torch.arange(step * batch_size, (step + 1) * batch_size)
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = model(images, seeds, step)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def peak_memory_mb(device: torch.device) -> float:
    """The device's peak allocated memory (CUDA), or the process's peak resident memory (CPU, Linux)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({torch.get_num_threads()} torch threads)"


def markdown(record: dict) -> str:
    decoder = "toy" if record["toy"] else "SD 2-base-shaped"
    rows = [
        f"# GPU training throughput: {decoder} decoder, {record['resolution']} px",
        "",
        "| device | batch | images/s per GPU | step s (median) | peak memory MB | trainable params | decoder params |",
        "|---|---|---|---|---|---|---|",
        f"| {record['device']} | {record['batch_size']} | {record['images_per_s_per_gpu']:.1f} | "
        f"{record['step_s_median']:.3f} | {record['peak_memory_mb']:.0f} | {record['trainable_params'] / 1e6:.2f}M | "
        f"{record['decoder_params'] / 1e6:.1f}M |",
        "",
        f"Goal on one H100: {record['goal_images_per_s']} images/s (the paper's per-chip rate), "
        f"{record['stretch_images_per_s']} stretch.",
    ]
    return "\n".join(rows + provenance_lines(record))


def parse(argv: list[str] | None):
    parser = benchmark_parser(__doc__)
    parser.add_argument("--toy", action="store_true", help="tiny decoder and encoder: seconds on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step on this device")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, allocator)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute the UNet's activations")
    parser.add_argument("--note", default="", help="conditions worth recording beside the numbers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; write and return its record."""
    args = parse(argv)
    torch.manual_seed(0)
    model = build_model(args.toy, args.device, args.gradient_checkpointing)
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_training(model, args.batch_size, args.steps, args.warmup)
    step_s = statistics.median(times)
    record = {
        "toy": args.toy,
        "device": device_name(device),
        "resolution": model.decoder.resolution,
        "batch_size": args.batch_size,
        "images_per_s_per_gpu": args.batch_size / step_s,
        "step_s_median": step_s,
        "step_s": times,
        "peak_memory_mb": peak_memory_mb(device),
        "trainable_params": sum(p.numel() for p in model.encoder.parameters() if p.requires_grad),
        "decoder_params": sum(p.numel() for p in model.decoder.parameters()),
        "vocab_size": model.decoder.vocab_size,
        "num_tokens": model.config.encoder.num_tokens,
        "decoder_dtype": str(model.decoder.dtype),
        "gradient_checkpointing": args.gradient_checkpointing,
        "goal_images_per_s": 74,
        "stretch_images_per_s": 150,
        "note": args.note,
        **provenance(),
    }
    if argv is not None:  # called from Python (the tests): the command is the arguments given
        record["command"] = "python benchmarks/gpu_throughput.py " + " ".join(argv)
    name = f"gpu_throughput{'-toy' if args.toy else ''}-{device.type}"
    write_results(args.out, name, record, markdown(record))
    return record


if __name__ == "__main__":
    main()
