"""How far can a prompt drive a frozen decoder, per image, when it is free vectors and when it is words?

For each of a few test scenes, the same number of optimiser steps fits three kinds of prompt to
the decoder's own denoising loss:
- free continuous embeddings at the token positions (no vocabulary: what the text pathway can carry);
- hard prompts of words by PEZ (the library's `invert_prompts`, the evaluation's per-image baseline);
- word logits relaxed by Gumbel-softmax, annealed as the world preset anneals the encoder's (the
  encoder's estimator without amortisation), scored by their argmax words.
Each prompt, and the references (empty text, the human-style caption, the full description), is
scored by its fixed-noise loss and by the scene accuracy of the images the decoder draws from it.

Free vectors against words measure what the vocabulary costs; the Gumbel-softmax words against the
encoder's text measure what learning one encoder for all images costs.

usage: python benchmarks/prompt_gap.py [--decoder bundled:decoder_a] [--scenes 32] [--steps 300]
Writes benchmarks/results/prompt_gap.{md,json}.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from record import machine  # the script's folder is on sys.path

from dediffusion.config import load_config
from dediffusion.eval.prompt_inversion import invert_prompts
from dediffusion.eval.scene_accuracy import scene_accuracy
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.dediffusion import sample_generators
from dediffusion.models.quantize import gumbel_softmax, sample_gumbel, temperature_at
from dediffusion.world import describe, human_caption, render_batch, test_scenes
from dediffusion.world.perception import PerceptionModel

TIMESTEPS = [150, 300, 450, 600, 750, 900, 999]
GUIDANCE, INFERENCE_STEPS = 2.0, 20


def fit_free_embeddings(decoder, images, num_tokens: int, steps: int, learning_rate: float) -> torch.Tensor:
    """Per-image continuous embeddings (B, N, D) at the N token positions, started at the mean word
    embedding and fitted with Adam to the denoising loss (image b's noise and timesteps from seed b)."""
    table = decoder.text_encoder.get_input_embeddings().weight.detach()
    allowed = table[decoder.vocabulary_mask()]
    start = allowed.mean(0).expand(images.shape[0], num_tokens, -1)
    embeddings = (start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    optimizer = torch.optim.Adam([embeddings], lr=learning_rate)
    for step in range(steps):
        generators = sample_generators([step * images.shape[0] + b for b in range(images.shape[0])], "cpu")
        loss = decoder.denoising_loss(images, decoder.text_states_from_embeddings(embeddings), generators).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return embeddings.detach()


def fit_gumbel_words(decoder, images, num_tokens: int, steps: int, learning_rate: float) -> list[str]:
    """Per-image token logits (B, N, V) fitted with Adam through Gumbel-softmax tokens, the temperature
    annealed over `steps` as the world preset anneals the encoder's; returns the argmax words."""
    tokens = load_config("world").tokens
    mask = decoder.vocabulary_mask()
    shape = (images.shape[0], num_tokens, decoder.vocab_size)
    logits = (0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(0))).requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    for step in range(steps):
        generators = sample_generators([step * images.shape[0] + b for b in range(images.shape[0])], "cpu")
        masked = logits.masked_fill(~mask, float("-inf"))
        noise = sample_gumbel(shape[1:], generators, "cpu")
        temperature = temperature_at(step, tokens.temperature_start, tokens.temperature_end, steps)
        probs = gumbel_softmax(masked, temperature, noise)
        loss = decoder.denoising_loss(images, decoder.soft_text_embeddings(probs), generators).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.decode_tokens(logits.detach().masked_fill(~mask, float("-inf")).argmax(-1))


def draw_from_states(decoder, states: torch.Tensor) -> torch.Tensor:
    """Images from text states (B, T, D): guidance GUIDANCE, INFERENCE_STEPS DDIM steps, seed i for image i."""
    generators = [torch.Generator().manual_seed(i) for i in range(states.shape[0])]
    return decoder.generate(None, states, GUIDANCE, INFERENCE_STEPS, generators)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", default="bundled:decoder_a")
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--num-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/prompt_gap.json")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    decoder = TextToImageDecoder.from_pretrained(args.decoder)
    scenes = test_scenes(args.scenes)
    images = render_batch(scenes)
    read = PerceptionModel.load().predict

    def score(states: torch.Tensor, seconds: float | None = None) -> dict:
        loss = decoder.fixed_noise_loss(images, states, TIMESTEPS).mean().item()
        drawn = draw_from_states(decoder, states)
        return {"fixed_noise_loss": loss, "scene_accuracy": scene_accuracy(scenes, read(drawn)), "seconds": seconds}

    def timed(fit):
        began = time.perf_counter()
        return fit(), time.perf_counter() - began

    texts = {
        "empty": [""] * len(scenes),
        "human": [human_caption(s) for s in scenes],
        "description": [describe(s) for s in scenes],
    }
    rows = {name: score(decoder.encode_text(t)) for name, t in texts.items()}
    inversion, seconds = timed(lambda: invert_prompts(decoder, images, args.num_tokens, steps=args.steps))
    texts["words (PEZ)"] = inversion.texts
    rows["words (PEZ)"] = score(decoder.encode_text(inversion.texts), seconds)
    words, seconds = timed(lambda: fit_gumbel_words(decoder, images, args.num_tokens, args.steps, 0.1))
    texts["words (Gumbel-softmax)"] = words
    rows["words (Gumbel-softmax)"] = score(decoder.encode_text(words), seconds)
    embeddings, seconds = timed(lambda: fit_free_embeddings(decoder, images, args.num_tokens, args.steps, 1e-2))
    with torch.no_grad():
        rows["free embeddings"] = score(decoder.text_states_from_embeddings(embeddings), seconds)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "decoder": args.decoder,
        "num_scenes": args.scenes,
        "num_tokens": args.num_tokens,
        "steps": args.steps,
        "timesteps": TIMESTEPS,
        "guidance_scale": GUIDANCE,
        "num_inference_steps": INFERENCE_STEPS,
        "rows": rows,
        "examples": [{k: v[i] for k, v in texts.items()} for i in range(3)],
        "wall_time_s": time.perf_counter() - start,
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(record))
    print(out.with_suffix(".md").read_text())


def to_markdown(r: dict) -> str:
    lines = [
        f"# Prompt gap: per-image prompts for `{r['decoder']}` ({r['num_scenes']} test scenes)",
        "",
        f"Per image, {r['steps']} Adam steps on the decoder's denoising loss; {r['num_tokens']} token positions.",
        f"Fixed-noise loss: mean over t in {r['timesteps']} (lower is better). Scene accuracy: images drawn",
        f"from the prompt (guidance {r['guidance_scale']:g}, {r['num_inference_steps']} DDIM steps, seed i for "
        "image i), read by the perception model.",
        "",
        "| prompt | fixed-noise loss | scene accuracy | fitting time (s) |",
        "|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.0f}"
        lines.append(f"| {name} | {row['fixed_noise_loss']:.4f} | {100 * row['scene_accuracy']:.1f}% | {seconds} |")
    lines += ["", "## Examples", ""]
    for e in r["examples"]:
        lines += [f"- description: {e['description']}", f"  - words (PEZ): `{e['words (PEZ)']}`"]
        lines += [f"  - words (Gumbel-softmax): `{e['words (Gumbel-softmax)']}`"]
    lines += [
        "",
        f"- command: `{r['command']}`",
        f"- wall time: {r['wall_time_s']:.0f} s",
        f"- machine: {r['machine']['uname']}; torch {r['machine']['torch']}, {r['machine']['torch_threads']} threads",
        f"- date: {r['date']}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
