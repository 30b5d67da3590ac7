"""Question answering from text alone, over a task's questions (`data.task.Task.qa_set`).

`qa_suite(model, llm, task, num_images, max_shots)` asks every question about the first `num_images`
images of the task's QA set, with the picture given as: nothing (blind), each of the task's reference
texts (the world's human-style caption and full description), the De-Diffusion text as written, and
its unique-words form. Zero-shot, and few-shot with `max_shots` solved examples (`Task.qa_examples`)
whose pictures go *through the same source* (De-Diffusion examples show De-Diffusion text). Scores are
calibrated against the context-free prior (`eval/qa.py`). Accuracy overall and per question kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from ..data.task import LabelledSet, Task
from .qa import QAItem, answer_questions

logger = logging.getLogger(__name__)

ENCODER_SOURCES = ("De-Diffusion", "De-Diffusion, unique words")


def qa_suite(model, llm, task: Task, num_images: int = 50, max_shots: int = 3) -> dict:
    """{"shots": {k: {source: {"accuracy", "by_kind"}}}, "num_questions", "num_scenes", "wall_time_s"}.

    Args:
        model: the De-Diffusion model whose text is one of the sources.
        llm: a `ChoiceScorer` (see `dediffusion.llm`).
        task: supplies the images, their questions and reference texts.
        num_images: the first images of the task's QA set whose questions are asked.
        max_shots: solved examples in the few-shot prompt (zero-shot is always run too).
    """
    start = time.perf_counter()
    size = model.decoder.resolution
    asked, examples = task.qa_set(num_images, size), task.qa_examples(max(max_shots, 1), size)
    sources = source_texts(model, asked)
    out: dict = {"num_scenes": len(asked.images), "shots": {}}
    for shots in sorted({0, max_shots}):
        by_source = {}
        for source, texts_of in sources.items():
            items, kinds = qa_items(asked.questions, texts_of(asked))
            solved, _ = qa_items(examples.questions[:shots], texts_of(examples)[:shots])
            by_source[source] = score_answers(items, answer_questions(llm, items, solved), kinds)
            logger.info("QA %d-shot from %s: %.3f", shots, source, by_source[source]["accuracy"])
        out["shots"][str(shots)] = by_source
    out["num_questions"] = len(kinds)
    out["wall_time_s"] = time.perf_counter() - start
    return out


def qa_items(questions: Sequence[Sequence], contexts: Sequence[str]) -> tuple[list[QAItem], list[str]]:
    """Every question about each image, with that image's text as the picture; and each one's kind."""
    asked = [(context, q) for qs, context in zip(questions, contexts) for q in qs]
    return [QAItem(c, q.question, tuple(q.choices), q.answer) for c, q in asked], [q.kind for _, q in asked]


def score_answers(items: Sequence[QAItem], answers: Sequence[str], kinds: Sequence[str]) -> dict:
    """Accuracy overall and per question kind."""
    right = [item.answer == answer for item, answer in zip(items, answers)]
    by_kind = {}
    for kind in dict.fromkeys(kinds):
        hits = [r for r, k in zip(right, kinds) if k == kind]
        by_kind[kind] = {"accuracy": sum(hits) / len(hits), "n": len(hits)}
    return {"accuracy": sum(right) / len(right), "by_kind": by_kind}


def source_texts(model, labelled: LabelledSet) -> dict[str, Callable[[LabelledSet], list[str]]]:
    """Source name -> how to get one text per image of a labelled set: blind, the task's reference
    texts, and the encoder's text in both forms."""

    def encoded(unique_words: bool) -> Callable[[LabelledSet], list[str]]:
        return lambda s: model.encode(s.images, unique_words=unique_words) if len(s.images) else []

    sources: dict = {"blind": lambda s: [""] * len(s.images)}
    names = list(labelled.reference_texts)
    sources.update({name: (lambda s, name=name: s.reference_texts[name]) for name in names if name != "description"})
    sources.update(zip(ENCODER_SOURCES, (encoded(False), encoded(True))))
    if "description" in names:  # the oracle last, as in every table
        sources["description"] = lambda s: s.reference_texts["description"]
    return sources
