"""Question answering on world images: the same LLM and prompt, only the picture's text changes.

`world_qa(model, settings)` asks every question of `questions(scene)` about the first
``settings.qa_scenes`` test scenes, with the picture given as: nothing (blind), the human-style
caption, the De-Diffusion text (as written, and its unique-words form), or the full description. Zero-shot, and few-shot with
``settings.qa_shots`` solved examples whose pictures come from training scenes *through the same
source* (De-Diffusion examples show De-Diffusion text), one example per question kind in turn.
Scores are calibrated against the context-free prior (`eval/qa.py`). Accuracy overall and per
question kind, with the wall time of the whole section.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..world import describe, human_caption, render_batch, test_scenes, train_scenes
from ..world.questions import QUESTION_KINDS, questions
from .qa import QAItem, answer_questions

logger = logging.getLogger(__name__)

QA_SOURCES = ("blind", "human", "De-Diffusion", "De-Diffusion, unique words", "description")
EXAMPLE_SEED = 7  # training scenes the few-shot examples are drawn from


def world_qa(model, llm, num_scenes: int = 50, max_shots: int = 3) -> dict:
    """{"shots": {k: {source: {"accuracy", "by_kind"}}}, "num_questions", "num_scenes", "wall_time_s"}.

    Args:
        model: the De-Diffusion model whose text is one of the sources.
        llm: a `ChoiceScorer` (see `dediffusion.llm`).
        num_scenes: the first test scenes whose questions are asked.
        max_shots: solved examples in the few-shot prompt (zero-shot is always run too).
    """
    start = time.perf_counter()
    scenes = test_scenes(num_scenes)
    example_scenes = train_scenes(max(max_shots, 1), seed=EXAMPLE_SEED)
    texts = _source_texts(model)
    out: dict = {"num_scenes": len(scenes), "shots": {}}
    for shots in sorted({0, max_shots}):
        by_source = {}
        for source in QA_SOURCES:
            items, kinds = qa_items(scenes, texts[source](scenes))
            examples = few_shot_examples(example_scenes[:shots], texts[source](example_scenes[:shots]), shots)
            answers = answer_questions(llm, items, examples)
            by_source[source] = score_answers(items, answers, kinds)
            logger.info("QA %d-shot from %s: %.3f", shots, source, by_source[source]["accuracy"])
        out["shots"][str(shots)] = by_source
    out["num_questions"] = len(kinds)
    out["wall_time_s"] = time.perf_counter() - start
    return out


def qa_items(scenes: Sequence, contexts: Sequence[str]) -> tuple[list[QAItem], list[str]]:
    """Every question about each scene, with that scene's text as the picture; and each one's kind."""
    asked = [(context, q) for scene, context in zip(scenes, contexts) for q in questions(scene)]
    return [QAItem(c, q.question, q.choices, q.answer) for c, q in asked], [q.kind for _, q in asked]


def few_shot_examples(scenes: Sequence, contexts: Sequence[str], shots: int) -> list[QAItem]:
    """`shots` solved examples, example i a question of kind i (in `QUESTION_KINDS` order) about scene i."""
    examples = []
    for i, (scene, context) in enumerate(zip(scenes, contexts)):
        asked = questions(scene)
        wanted = QUESTION_KINDS[i % len(QUESTION_KINDS)]
        q = next((q for q in asked if q.kind == wanted), asked[0])
        examples.append(QAItem(context, q.question, q.choices, q.answer))
    return examples[:shots]


def score_answers(items: Sequence[QAItem], answers: Sequence[str], kinds: Sequence[str]) -> dict:
    """Accuracy overall and per question kind."""
    right = [item.answer == answer for item, answer in zip(items, answers)]
    by_kind = {}
    for kind in dict.fromkeys(kinds):
        hits = [r for r, k in zip(right, kinds) if k == kind]
        by_kind[kind] = {"accuracy": sum(hits) / len(hits), "n": len(hits)}
    return {"accuracy": sum(right) / len(right), "by_kind": by_kind}


def _source_texts(model) -> dict[str, Callable[[Sequence], list[str]]]:
    def encoded(scenes, unique_words=False):
        if not scenes:
            return []
        return model.encode(render_batch(scenes, size=model.decoder.resolution), unique_words=unique_words)

    return {
        "blind": lambda scenes: [""] * len(scenes),
        "human": lambda scenes: [human_caption(s) for s in scenes],
        "De-Diffusion": encoded,
        "De-Diffusion, unique words": lambda scenes: encoded(scenes, unique_words=True),
        "description": lambda scenes: [describe(s) for s in scenes],
    }
