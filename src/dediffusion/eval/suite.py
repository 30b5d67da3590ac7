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

Images come from a task (`data.task.Task`; the world's fixed test split through
`dediffusion.world.evaluation.WorldTask`), which also supplies the answer key, or from a user's folder
(``images``): sections that need an answer key (scene accuracy, few-shot, QA) then say so instead of
failing. Image i is drawn with seed ``seed + i`` for every prompt source.
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
from ..data.grid import save_grid
from ..data.task import LabelledSet, Task
from ..models.decoder import TextToImageDecoder
from ..models.dediffusion import DeDiffusion
from ..models.sampling import generate_from_prompts, resolve_draw_dtype
from .frechet import EffNetFeatures
from .prompt_inversion import invert_prompts
from .reconstruction import best_over_sweep, score_prompt_sources

logger = logging.getLogger(__name__)

UNIQUE = "De-Diffusion, unique words"  # the text with each word once, the filler dropped (`DeDiffusion.encode`)
NEEDS_ANSWER_KEY = "needs an answer key: run on world images (no --images) to get it"


@dataclass(frozen=True)
class EvaluationSettings:
    model: str = "bundled:world_encoder"
    decoder: str | None = None  # the model's decoder ("decoder_a" in the report); None: the one it records
    decoder_b: str | None = "bundled:decoder_b"
    images: str | None = None  # a folder of the user's images; None: the world's test split
    num_images: int = 100
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 4.0)  # 1: no classifier-free guidance
    num_inference_steps: int = 20
    draw_dtype: str = "auto"  # "bfloat16": redraw under autocast; "auto": bfloat16 where the hardware computes it
    # natively (a CUDA GPU with bf16, a CPU with AVX512-BF16/AMX), else float32
    inversion_steps: int = 150
    ablation_models: tuple[str, ...] = ()
    few_shot_scenes: int = 1000
    few_shot_episodes: int = 200
    llm: str | None = None  # None: no question answering; "smollm2", a folder or an http(s) URL
    llm_model: str | None = None
    qa_scenes: int = 50
    qa_shots: int = 3
    seed: int = 0


def run_evaluation(settings: EvaluationSettings, out_dir: Path, task: Task | None = None) -> dict:
    """Every section of the report as one record (see the module docstring); grids go to `out_dir`.

    `task` supplies the images and their answer key unless `settings.images` names a folder."""
    start = time.perf_counter()
    decoder = TextToImageDecoder.from_pretrained(settings.decoder, lazy=True) if settings.decoder else None
    model = DeDiffusion.from_pretrained(settings.model, decoder=decoder).eval()
    decoders = {"decoder_a": model.decoder}
    if settings.decoder_b:
        decoders["decoder_b"] = TextToImageDecoder.from_pretrained(settings.decoder_b)
    task = None if settings.images else task
    inputs = load_inputs(settings, model.decoder.resolution, task)
    used = resolve_draw_dtype(settings.draw_dtype, model.decoder.device)
    settings = replace(settings, draw_dtype=str(used).removeprefix("torch."))  # the record names it, never "auto"
    features, scorer = EffNetFeatures(), task.scorer if task else None
    record: dict = {"settings": asdict(settings), "num_images": len(inputs.images), "world": task is not None}
    if task is not None:
        record.update(scorer.summarize(inputs.truths))
    sources, cost = prompt_sources(model, inputs, settings)
    record["texts"] = {name: texts[:10] for name, texts in sources.items()}
    record["reconstruction"] = {
        key: _scored(decoder, sources, inputs, features, scorer, settings) for key, decoder in decoders.items()
    }
    record["cost"] = cost_section(cost, record["reconstruction"]["decoder_a"]["best"])
    record["token_ablation"] = ablation_section(model, decoders, inputs, features, scorer, settings, record, task)
    record["few_shot"] = few_shot_section(model, settings, task)
    record["grids"] = write_grids(Path(out_dir), decoders, inputs, sources, record["reconstruction"], settings)
    record["wall_time_s"] = time.perf_counter() - start
    record["qa"] = qa_section(model, settings, task)
    return record


def load_inputs(settings: EvaluationSettings, size: int, task: Task | None) -> LabelledSet:
    """The task's first test images with their answer key; or the first readable images of the user's folder."""
    if settings.images is None:
        if task is None:
            raise ValueError("no images to evaluate: give a folder (--images) or a task")
        return task.test_set(settings.num_images, size)
    from ..data.images import ImageFolder, load_batch

    dataset = ImageFolder([settings.images], size)
    indices = list(range(min(settings.num_images, len(dataset))))
    images, loaded, failed = load_batch(dataset, indices)
    for error in failed:
        logger.warning("skipped %s", error)
    if len(loaded) < 2:
        raise ValueError(f"{settings.images}: need at least 2 readable images to compare distributions")
    return LabelledSet(images, [])


def prompt_sources(model: DeDiffusion, inputs: LabelledSet, settings: EvaluationSettings) -> tuple[dict, dict]:
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
    sources = {
        "De-Diffusion": texts,
        UNIQUE: model.encode(images, unique_words=True),
        "prompt inversion": inversion.texts,
    }
    sources.update(inputs.reference_texts)
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


def ablation_section(model, decoders, inputs, features, scorer, settings, record, task) -> list[dict]:
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
                inputs.truths or None, scorer, settings.seed, resolve_draw_dtype(settings.draw_dtype),
            )  # the main encoder's redraws are those of the reconstruction table  # fmt: skip
            row[key] = cells["De-Diffusion"][str(float(chosen[key]))]
        row["few_shot"] = few_shot_section(other, settings, task, sources=("De-Diffusion",))
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


def few_shot_section(
    model, settings, task: Task | None, sources=("De-Diffusion", "human", "description", "blind")
) -> dict:
    """5-way 1-shot accuracy of each labelled attribute (the world: the main object's shape and colour),
    from each source's text."""
    if task is None:
        return {"skipped": NEEDS_ANSWER_KEY}
    from .fewshot import few_shot_accuracy

    labelled = task.few_shot_set(settings.few_shot_scenes, model.decoder.resolution)
    makers = {
        "De-Diffusion": lambda: model.encode(labelled.images),
        "blind": lambda: [""] * len(labelled.images),
        **{name: (lambda texts=texts: texts) for name, texts in labelled.reference_texts.items()},
    }
    embed = _sentence_embedder()
    out: dict = {"num_scenes": len(labelled.images), "ways": 5, "shots": 1, "episodes": settings.few_shot_episodes}
    for source in sources:
        embeddings = embed(makers[source]())
        out[source] = {
            attribute: few_shot_accuracy(embeddings, labels, episodes=settings.few_shot_episodes, seed=settings.seed)
            for attribute, labels in labelled.labels.items()
        }
    return out


def qa_section(model, settings, task: Task | None) -> dict:
    """Question answering with a text-only LLM from each source's text; see `eval/qa_suite.py`."""
    if settings.llm is None:
        return {"skipped": "no LLM chosen (--llm smollm2, a model folder or an http(s) URL)"}
    if task is None:
        return {"skipped": NEEDS_ANSWER_KEY}
    from ..llm import load_llm
    from .qa_suite import qa_suite

    llm = load_llm(settings.llm, model=settings.llm_model)
    return {"llm": settings.llm, **qa_suite(model, llm, task, settings.qa_scenes, settings.qa_shots)}


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


def _scored(decoder, sources, inputs, features, scorer, settings) -> dict:
    cells = score_prompt_sources(
        decoder, sources, inputs.images, settings.guidance_scales, settings.num_inference_steps, features,
        inputs.truths or None, scorer, settings.seed, resolve_draw_dtype(settings.draw_dtype),
    )  # fmt: skip
    return {"cells": cells, "best": best_over_sweep(cells)}


@functools.cache
def _sentence_embedder():
    """One sentence embedder per process (loading MiniLM takes seconds)."""
    from .fewshot import SentenceEmbedder

    return SentenceEmbedder.from_package()


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
