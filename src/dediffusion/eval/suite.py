"""`dediffusion evaluate`: the paper's experiments on one set of images, side by side.

`run_evaluation(settings)` returns one JSON-ready record with these sections:

- ``reconstruction``: prompt sources (De-Diffusion text, per-image prompt optimisation with the same
  token budget, random tokens, empty text; on world images also the human-style caption and the full
  description) redrawn by decoder A (the encoder's own decoder) and decoder B (one it never saw), each
  cell scored by scene accuracy and FD-EffNet at every guidance scale of the sweep;
- ``cost``: images/s of the encoder against per-image optimisation, on the same machine;
- ``token_ablation``: the same for encoders with other token budgets (``ablation_models``);
- ``few_shot``: 5-way 1-shot classification of the main object's shape and colour from text alone;
- ``qa``: question answering with a text-only LLM (``llm``), blind / human / De-Diffusion /
  description, zero-shot and few-shot, with its wall time.

Images are the first ``num_images`` scenes of the world's fixed test split, or a user's folder
(``images``): sections that need the world's answer key (scene accuracy, few-shot, QA) then say so
instead of failing. Image i is drawn with seed ``seed + i`` for every prompt source.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..assets import resolve
from ..models.decoder import TextToImageDecoder
from ..models.dediffusion import DeDiffusion
from ..records import cpu_bfloat16_units
from .frechet import EffNetFeatures
from .grid import save_grid
from .prompt_inversion import invert_prompts
from .reconstruction import best_over_sweep, generate_from_prompts, score_prompt_sources
from .scene_accuracy import objects_per_image

logger = logging.getLogger(__name__)

UNIQUE = "De-Diffusion, unique words"  # the text with each word once, the filler dropped (`DeDiffusion.encode`)
NEEDS_ANSWER_KEY = "needs the world's answer key: run on world images (no --images) to get it"


@dataclass(frozen=True)
class EvaluationSettings:
    model: str = "bundled:world_encoder"
    decoder_b: str | None = "bundled:decoder_b"
    images: str | None = None  # a folder of the user's images; None: the world's test split
    num_images: int = 100
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 4.0)  # 1: no classifier-free guidance
    num_inference_steps: int = 20
    draw_dtype: str = "auto"  # "bfloat16": redraw under autocast (README: 846 s against 1357 s in float32); "auto":
    # bfloat16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with AVX512-BF16/AMX), else float32
    inversion_steps: int = 150
    ablation_models: tuple[str, ...] = ()
    few_shot_scenes: int = 1000
    few_shot_episodes: int = 200
    llm: str | None = None  # None: no question answering; "smollm2", a folder or an http(s) URL
    llm_model: str | None = None
    qa_scenes: int = 50
    qa_shots: int = 3
    seed: int = 0


@dataclass
class Inputs:
    images: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    scenes: list | None  # the true scene of each image (world only)


def run_evaluation(settings: EvaluationSettings, out_dir: Path) -> dict:
    """Every section of the report as one record (see the module docstring); grids go to `out_dir`."""
    start = time.perf_counter()
    model = DeDiffusion.from_pretrained(settings.model).eval()
    decoders = {"decoder_a": model.decoder}
    if settings.decoder_b:
        decoders["decoder_b"] = TextToImageDecoder.from_pretrained(settings.decoder_b)
    inputs = load_inputs(settings, model.decoder.resolution)
    used = resolve_draw_dtype(settings.draw_dtype, model.decoder.device)
    settings = replace(settings, draw_dtype=str(used).removeprefix("torch."))  # the record names it, never "auto"
    features, read_scenes = EffNetFeatures(), _scene_reader(inputs)
    record: dict = {"settings": asdict(settings), "num_images": len(inputs.images), "world": inputs.scenes is not None}
    if inputs.scenes is not None:
        record["objects_per_image"] = objects_per_image(inputs.scenes)
    sources, cost = prompt_sources(model, inputs, settings)
    record["texts"] = {name: texts[:10] for name, texts in sources.items()}
    record["reconstruction"] = {
        key: _scored(decoder, sources, inputs, features, read_scenes, settings) for key, decoder in decoders.items()
    }
    record["cost"] = cost_section(cost, record["reconstruction"]["decoder_a"]["best"])
    record["token_ablation"] = ablation_section(model, decoders, inputs, features, read_scenes, settings, record)
    record["few_shot"] = few_shot_section(model, settings, inputs.scenes is not None)
    record["grids"] = write_grids(Path(out_dir), decoders, inputs, sources, record["reconstruction"], settings)
    record["wall_time_s"] = time.perf_counter() - start
    record["qa"] = qa_section(model, settings, inputs.scenes is not None)
    return record


def load_inputs(settings: EvaluationSettings, size: int) -> Inputs:
    """The world's first test scenes, rendered; or the first readable images of the user's folder."""
    if settings.images is None:
        from ..world import render_batch, test_scenes

        scenes = test_scenes(settings.num_images)
        return Inputs(render_batch(scenes, size=size), scenes)
    from ..data.images import ImageFolder, load_batch

    dataset = ImageFolder([settings.images], size)
    indices = list(range(min(settings.num_images, len(dataset))))
    images, loaded, failed = load_batch(dataset, indices)
    for error in failed:
        logger.warning("skipped %s", error)
    if len(loaded) < 2:
        raise ValueError(f"{settings.images}: need at least 2 readable images to compare distributions")
    return Inputs(images, None)


def prompt_sources(model: DeDiffusion, inputs: Inputs, settings: EvaluationSettings) -> tuple[dict, dict]:
    """{source: one text per image} and the timing of the encoder and of per-image optimisation."""
    images, num_tokens = inputs.images, model.config.encoder.num_tokens
    encode_s = _best_time(lambda: model.encode_tokens(images))
    texts = model.encode(images)
    start = time.perf_counter()
    inversion = invert_prompts(
        model.decoder,
        images,
        num_tokens,
        steps=settings.inversion_steps,
        timestep_bias=model.config.train.timestep_bias,
        vocab_mask=model.vocab_mask,
        seeds=range(settings.seed, settings.seed + len(images)),
    )
    invert_s = time.perf_counter() - start
    sources = {"De-Diffusion": texts, UNIQUE: model.encode(images, unique_words=True), "prompt inversion": inversion.texts}
    if inputs.scenes is not None:
        from ..world import describe, human_caption

        sources["description"] = [describe(s) for s in inputs.scenes]
        sources["human"] = [human_caption(s) for s in inputs.scenes]
    sources["random tokens"] = random_token_texts(model, len(images), settings.seed)
    sources["empty"] = [""] * len(images)
    cost = {"encoder_images_per_s": len(images) / encode_s, "inversion_images_per_s": len(images) / invert_s}
    cost["inversion_steps"] = settings.inversion_steps
    return sources, cost


def random_token_texts(model: DeDiffusion, n: int, seed: int) -> list[str]:
    """`n` texts of the encoder's token budget, each token uniform over the allowed vocabulary."""
    allowed = model.vocab_mask.nonzero().squeeze(1).cpu()
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(allowed), (n, model.config.encoder.num_tokens), generator=generator)
    return model.decoder.decode_tokens(allowed[picks])


def cost_section(cost: dict, best_a: dict) -> dict:
    """Throughput of both ways of getting a text, as a ratio, with the quality each reached on decoder A."""
    ratio = cost["encoder_images_per_s"] / cost["inversion_images_per_s"]
    quality = {k: best_a[k]["scene_accuracy"] for k in ("De-Diffusion", "prompt inversion")}
    return {**cost, "speedup": ratio, "scene_accuracy_a": quality}


def ablation_section(model, decoders, inputs, features, read_scenes, settings, record) -> list[dict]:
    """Reconstruction (at each decoder's best De-Diffusion guidance) and few-shot accuracy per token budget."""
    rows = []
    chosen = {k: _guidance_of_best(r["best"]["De-Diffusion"]) for k, r in record["reconstruction"].items()}
    for path in (settings.model, *settings.ablation_models):
        other = model if path == settings.model else DeDiffusion.from_pretrained(path, decoder=model.decoder).eval()
        texts = {"De-Diffusion": other.encode(inputs.images)}
        row: dict = {"model": path, "num_tokens": other.config.encoder.num_tokens, **training_steps(path, other)}
        for key, decoder in decoders.items():
            cells = record["reconstruction"][key]["cells"] if other is model else score_prompt_sources(
                decoder, texts, inputs.images, [chosen[key]], settings.num_inference_steps, features,
                inputs.scenes, read_scenes, settings.seed, resolve_draw_dtype(settings.draw_dtype),
            )  # the main encoder's redraws are those of the reconstruction table  # fmt: skip
            row[key] = cells["De-Diffusion"][str(float(chosen[key]))]
        row["few_shot"] = few_shot_section(other, settings, inputs.scenes is not None, sources=("De-Diffusion",))
        rows.append(row)
    return sorted(rows, key=lambda r: r["num_tokens"])


def training_steps(path, model) -> dict[str, int]:
    """{"steps", "sleep_steps"}: the wake and sleep steps an encoder folder was trained for, from its
    `training.json` (written by `dediffusion train` beside the final weights), else from its config."""
    record = Path(resolve(path)) / "training.json"
    if record.is_file():
        trained = json.loads(record.read_text())
        return {"steps": int(trained["steps"]), "sleep_steps": int(trained.get("sleep_steps", 0))}
    return {"steps": int(model.config.train.steps), "sleep_steps": int(model.config.sleep.steps)}


def few_shot_section(model, settings, world: bool, sources=("De-Diffusion", "human", "description", "blind")) -> dict:
    """5-way 1-shot accuracy of the main object's shape and colour, from each source's text."""
    if not world:
        return {"skipped": NEEDS_ANSWER_KEY}
    from ..world import describe, human_caption, render_batch, test_scenes
    from .fewshot import few_shot_accuracy

    scenes = [s for s in test_scenes(settings.few_shot_scenes) if len(s.objects) == 1]
    makers = {
        "De-Diffusion": lambda: model.encode(render_batch(scenes, size=model.decoder.resolution)),
        "human": lambda: [human_caption(s) for s in scenes],
        "description": lambda: [describe(s) for s in scenes],
        "blind": lambda: [""] * len(scenes),
    }
    embed = _sentence_embedder()
    out: dict = {"num_scenes": len(scenes), "ways": 5, "shots": 1, "episodes": settings.few_shot_episodes}
    for source in sources:
        embeddings = embed(makers[source]())
        out[source] = {
            attribute: few_shot_accuracy(
                embeddings, [getattr(s.objects[0], attribute) for s in scenes],
                episodes=settings.few_shot_episodes, seed=settings.seed,
            )
            for attribute in ("shape", "color")
        }  # fmt: skip
    return out


def qa_section(model, settings, world: bool) -> dict:
    """Question answering with a text-only LLM from each source's text; see `eval/qa.py`."""
    if settings.llm is None:
        return {"skipped": "no LLM chosen (--llm smollm2, a model folder or an http(s) URL)"}
    if not world:
        return {"skipped": NEEDS_ANSWER_KEY}
    from ..llm import load_llm
    from .world_qa import world_qa

    llm = load_llm(settings.llm, model=settings.llm_model)
    return {"llm": settings.llm, **world_qa(model, llm, settings.qa_scenes, settings.qa_shots)}


def write_grids(out_dir: Path, decoders, inputs, sources, reconstruction, settings, n: int = 8) -> dict[str, str]:
    """image | text | redraw by each decoder, for the first `n` images, per learned source."""
    grids = {}
    for source in ("De-Diffusion", "prompt inversion"):
        texts, redraws, headers = sources[source][:n], [], ["image", f"{source} text"]
        for key, decoder in decoders.items():
            scale = _guidance_of_best(reconstruction[key]["best"][source])
            steps, dtype = settings.num_inference_steps, resolve_draw_dtype(settings.draw_dtype)
            redraws.append(generate_from_prompts(decoder, texts, scale, steps, seed=settings.seed, dtype=dtype))
            headers.append(f"{key.replace('_', ' ')} (g={scale:g})")
        path = out_dir / f"examples_{source.replace(' ', '_').replace('-', '').lower()}.png"
        save_grid(path, inputs.images[:n], texts, redraws, headers)
        grids[source] = path.name
    return grids


def _scored(decoder, sources, inputs, features, read_scenes, settings) -> dict:
    cells = score_prompt_sources(
        decoder, sources, inputs.images, settings.guidance_scales, settings.num_inference_steps, features,
        inputs.scenes, read_scenes, settings.seed, resolve_draw_dtype(settings.draw_dtype),
    )  # fmt: skip
    return {"cells": cells, "best": best_over_sweep(cells)}


def _scene_reader(inputs: Inputs):
    if inputs.scenes is None:
        return None
    from ..world.perception import PerceptionModel

    return PerceptionModel.load().predict


@functools.cache
def _sentence_embedder():
    """One sentence embedder per process (loading MiniLM takes seconds)."""
    from .fewshot import SentenceEmbedder

    return SentenceEmbedder.from_package()


def resolve_draw_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """torch.float32 or torch.bfloat16 for `name` ("float32", "bfloat16" or "auto"). "auto" takes bfloat16
    only where `device` computes it natively (elsewhere bfloat16 arithmetic is emulated)."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(torch.device(device)) else torch.float32
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"draw_dtype must be auto, float32 or bfloat16, not {name!r}")
    return getattr(torch, name)


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic in hardware: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    return bool(cpu_bfloat16_units())


def _guidance_of_best(best: dict) -> float:
    scale = best["scene_accuracy_guidance"]
    return best["fd_effnet_guidance"] if scale is None else scale


def _best_time(fn, repeats: int = 3) -> float:
    with torch.no_grad():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(times)
