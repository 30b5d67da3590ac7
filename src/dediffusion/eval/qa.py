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
        return [self._score_one(prompt, row) for prompt, row in zip(prompts, choices)]

    def _score_one(self, prompt: str, choices: Sequence[str]) -> list[float]:
        """The prompt runs once; its key/value cache is shared by every choice's continuation."""
        encode = self.tokenizer
        head = torch.tensor([encode(prompt, add_special_tokens=False).input_ids], device=self.device)
        tails = [encode(" " + c, add_special_tokens=False).input_ids for c in choices]
        out = self.model(input_ids=head, use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        scores = [first[t[0]].item() for t in tails]
        longest = max(len(t) for t in tails)
        if longest == 1:
            return scores
        cache = out.cache
        cache.batch_repeat_interleave(len(tails))
        ids = torch.zeros((len(tails), longest - 1), dtype=torch.long, device=self.device)
        mask = torch.ones((len(tails), head.shape[1] + longest - 1), dtype=torch.long, device=self.device)
        for row, tail in enumerate(tails):  # feed all but the last token of each choice, right-padded
            ids[row, : len(tail) - 1] = torch.tensor(tail[:-1])
            mask[row, head.shape[1] + len(tail) - 1 :] = 0
        positions = torch.arange(head.shape[1], head.shape[1] + longest - 1, device=self.device).expand(len(tails), -1)
        rest = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache)
        logprobs = torch.log_softmax(rest.logits.float(), -1)
        for row, tail in enumerate(tails):
            scores[row] += sum(logprobs[row, j - 1, tail[j]].item() for j in range(1, len(tail)))
        return scores
