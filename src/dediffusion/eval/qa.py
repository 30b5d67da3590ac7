"""Question answering with a text-only language model: the image is only its text in the prompt.

The LLM never sees pixels and is never trained with the encoder (the paper's VQA setting). Each
question has a closed answer set; the model scores every choice as a continuation of the prompt and
the best one is its answer. Small LLMs prefer some answers whatever the context ("red" for every
colour question), so by default the score of each choice is calibrated against a context-free prior:
the same prompt with the context left out (log p(choice | context, question) - log p(choice | question)).

- `ChoiceScorer` (from `dediffusion.llm`): anything with `score(prompts, choices) -> log-likelihoods`;
  every `dediffusion.llm` client is one (`load_llm`), and tests use a scripted one.
- `build_prompt(context, question, examples)`: the prompt, zero-shot or with k solved examples.
- `answer_questions(scorer, items, ...)`: the chosen answers; `qa_accuracy` scores them.
- `answer_freely(lm, context, question, ...)`: an open answer, generated greedily up to the line's end.
- `load_examples(path)`: solved few-shot examples from a JSONL file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dediffusion.llm.base import ChoiceScorer, LanguageModel

logger = logging.getLogger(__name__)

INSTRUCTION = "Answer the question about the picture with one word."
NO_CONTEXT = "(no description)"
# The cue repeats "one word": with SmolLM2-135M, zero-shot on world questions, it answered 3-4 points
# more of them right from full descriptions than a plain "Answer:" did, on two sets of training scenes.
ANSWER_CUE = "Answer (one word):"


class ExamplesFileError(ValueError):
    """A few-shot examples file has a line that is not a solved example."""


@dataclass(frozen=True)
class QAItem:
    """One question about one image: the text standing in for the image, and the answer key."""

    context: str
    question: str
    choices: tuple[str, ...]
    answer: str | None = None  # None: no answer key (a user's own images)


def build_prompt(context: str, question: str, examples: Sequence[QAItem] = ()) -> str:
    """The prompt for one question; `examples` are solved items shown first (few-shot)."""
    shots = [_block(e.context, e.question) + f" {e.answer}\n\n" for e in examples]
    return INSTRUCTION + "\n\n" + "".join(shots) + _block(context, question)


def _block(context: str, question: str) -> str:
    return f"Picture: {context.strip() or NO_CONTEXT}\nQuestion: {question}\n{ANSWER_CUE}"


def answer_questions(
    scorer: ChoiceScorer,
    items: Sequence[QAItem],
    examples: Sequence[QAItem] = (),
    calibrate: bool = True,
) -> list[str]:
    """The scorer's answer to each item, chosen from `item.choices`."""
    scores = scorer.score([build_prompt(i.context, i.question, examples) for i in items], [i.choices for i in items])
    if calibrate:  # the context-free prompt depends only on the question: score each distinct one once
        blind = [(build_prompt("", i.question, examples), i.choices) for i in items]
        keys = sorted(set(blind))
        priors = dict(zip(keys, scorer.score([k[0] for k in keys], [k[1] for k in keys])))
        scores = [[s - p for s, p in zip(row, priors[key])] for row, key in zip(scores, blind)]
    return [item.choices[max(range(len(row)), key=row.__getitem__)] for item, row in zip(items, scores)]


def qa_accuracy(items: Sequence[QAItem], answers: Sequence[str]) -> float:
    """Fraction of answers equal to the answer key; items without a key are refused."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} questions but {len(answers)} answers")
    if any(item.answer is None for item in items):
        raise ValueError("accuracy needs the answer key: these questions have none (not world images)")
    if not items:
        raise ValueError("no questions to score")
    return sum(item.answer == a for item, a in zip(items, answers)) / len(items)


def answer_freely(
    lm: LanguageModel, context: str, question: str, examples: Sequence[QAItem] = (), max_new_tokens: int = 16
) -> str:
    """The model's open answer: greedy text after `build_prompt(...)`, up to the end of the line."""
    return lm.generate(build_prompt(context, question, examples), max_new_tokens, stop=("\n",)).strip()


def load_examples(path: str | Path) -> list[QAItem]:
    """Solved few-shot examples from a JSONL file: one {"context", "question", "answer"} object a line
    ("choices", a list, is optional). Raises FileNotFoundError, or ExamplesFileError naming the line."""
    path = Path(path)
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            choices = tuple(record.get("choices", ()))
            examples.append(QAItem(record["context"], record["question"], choices, str(record["answer"])))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ExamplesFileError(
                f"{path}:{number}: expected a JSON object with context, question and answer ({error})"
            ) from error
    return examples
