"""Question answering with a text-only language model: the image is only its text in the prompt.

The LLM never sees pixels and is never trained with the encoder (the paper's VQA setting). Each
question has a closed answer set; the model scores every choice as a continuation of the prompt and
the best one is its answer. Small LLMs prefer some answers whatever the context ("red" for every
colour question), so by default the score of each choice is calibrated against a context-free prior:
the same prompt with the context left out (log p(choice | context, question) - log p(choice | question)).

- `ChoiceScorer`: anything with `score(prompts, choices) -> log-likelihoods`; `TransformersScorer`
  wraps a local transformers causal LM; tests use a scripted one.
- `build_prompt(context, question, examples)`: the prompt, zero-shot or with k solved examples.
- `answer_questions(scorer, items, ...)`: the chosen answers; `qa_accuracy` scores them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

logger = logging.getLogger(__name__)

INSTRUCTION = "Answer the question about the picture with one word."
NO_CONTEXT = "(no description)"


@dataclass(frozen=True)
class QAItem:
    """One question about one image: the text standing in for the image, and the answer key."""

    context: str
    question: str
    choices: tuple[str, ...]
    answer: str | None = None  # None: no answer key (a user's own images)


class ChoiceScorer(Protocol):
    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        """Log-likelihood of each choice (as the continuation " choice") after its prompt."""


def build_prompt(context: str, question: str, examples: Sequence[QAItem] = ()) -> str:
    """The prompt for one question; `examples` are solved items shown first (few-shot)."""
    shots = [_block(e.context, e.question) + f" {e.answer}\n\n" for e in examples]
    return INSTRUCTION + "\n\n" + "".join(shots) + _block(context, question)


def _block(context: str, question: str) -> str:
    return f"Picture: {context.strip() or NO_CONTEXT}\nQuestion: {question}\nAnswer:"


def answer_questions(
    scorer: ChoiceScorer,
    items: Sequence[QAItem],
    examples: Sequence[QAItem] = (),
    calibrate: bool = True,
    batch_size: int = 16,
) -> list[str]:
    """The scorer's answer to each item, chosen from `item.choices`."""
    answers = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        choices = [item.choices for item in chunk]
        scores = torch.tensor(
            _pad(scorer.score([build_prompt(i.context, i.question, examples) for i in chunk], choices))
        )
        if calibrate:
            prior = scorer.score([build_prompt("", i.question, examples) for i in chunk], choices)
            scores = scores - torch.tensor(_pad(prior))
        answers += [item.choices[int(row[: len(item.choices)].argmax())] for item, row in zip(chunk, scores)]
    return answers


def _pad(rows: list[list[float]]) -> list[list[float]]:
    width = max(len(r) for r in rows)
    return [list(r) + [float("-inf")] * (width - len(r)) for r in rows]


def qa_accuracy(items: Sequence[QAItem], answers: Sequence[str]) -> float:
    """Fraction of answers equal to the answer key; items without a key are refused."""
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} questions but {len(answers)} answers")
    if any(item.answer is None for item in items):
        raise ValueError("accuracy needs the answer key: these questions have none (not world images)")
    if not items:
        raise ValueError("no questions to score")
    return sum(item.answer == a for item, a in zip(items, answers)) / len(items)


class TransformersScorer:
    """Choice log-likelihoods from a local transformers causal LM (summed over the choice's tokens)."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", **kwargs) -> TransformersScorer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
        return cls(model, tokenizer, device)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        pairs = [(p, c) for p, row in zip(prompts, choices) for c in row]
        scores = self._score_pairs(pairs)
        out, at = [], 0
        for row in choices:
            out.append(scores[at : at + len(row)])
            at += len(row)
        return out

    def _score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        encode = self.tokenizer
        sequences, spans = [], []
        for prompt, choice in pairs:
            head = encode(prompt, add_special_tokens=False).input_ids
            tail = encode(" " + choice, add_special_tokens=False).input_ids
            sequences.append(head + tail)
            spans.append((len(head), len(head) + len(tail)))
        width = max(len(s) for s in sequences)
        pad = encode.pad_token_id if encode.pad_token_id is not None else 0
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):  # right padding: positions stay those of the unpadded text
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        scores = []
        for row, (start, end) in enumerate(spans):
            targets = ids[row, start:end].to(self.device)
            scores.append(logprobs[row, start - 1 : end - 1].gather(1, targets[:, None]).sum().item())
        return scores
