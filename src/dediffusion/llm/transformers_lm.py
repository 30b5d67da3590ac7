"""A local transformers causal LM as a `LanguageModel` (choice scoring and greedy generation).

`TransformersLM(model, tokenizer, device)` wraps loaded objects; `TransformersLM.from_pretrained(dir)`
loads a folder written by `save_pretrained` (or a hub id where a network exists). Scoring runs each
prompt once and shares its key/value cache across that prompt's choices; generation is greedy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from .base import LLMError, cut_at_stop

logger = logging.getLogger(__name__)


class TransformersLM:
    """Choice log-likelihoods (summed over each choice's tokens) and greedy text from a causal LM."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.end_ids = _end_ids(model, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs) -> TransformersLM:
        """Load a causal LM and its tokenizer from a folder (fp32); raises LLMError naming the folder."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as error:
            raise LLMError(
                f"could not load a transformers causal LM from {path}: {error}. Pass a folder written by "
                "save_pretrained (config.json, weights, tokenizer files)."
            ) from error
        return cls(model, tokenizer, device)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @torch.no_grad()
    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each prompt, the summed log-likelihood of each choice as the continuation " choice"."""
        if len(prompts) != len(choices):
            raise ValueError(f"{len(prompts)} prompts but {len(choices)} rows of choices")
        return [self._score_one(prompt, row) for prompt, row in zip(prompts, choices)]

    def _score_one(self, prompt: str, choices: Sequence[str]) -> list[float]:
        """The prompt runs once; its key/value cache is shared by every choice's continuation."""
        head = torch.tensor([self._ids(prompt)], device=self.device)
        tails = [self._ids(" " + c) for c in choices]
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

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 32, stop: Sequence[str] = ()) -> str:
        """Greedy continuation: stops at an end-of-sequence token, a stop string, or `max_new_tokens`."""
        ids = self._ids(prompt)
        if not ids:
            raise ValueError("generate needs a non-empty prompt")
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
        new: list[int] = []
        text = ""
        for _ in range(max_new_tokens):
            token = int(out.logits[0, -1].argmax())
            if token in self.end_ids:
                break
            new.append(token)
            text, stopped = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), stop)
            if stopped:
                break
            step = torch.tensor([[token]], device=self.device)
            out = self.model(input_ids=step, cache=out.cache, use_cache=True)
        return text


def _end_ids(model, tokenizer) -> set[int]:
    """The token ids that end generation (the tokenizer's and the generation config's EOS)."""
    config = getattr(model, "generation_config", None)
    ends: set[int] = set()
    for end in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        ends.update(end if isinstance(end, list) else [end])
    return {e for e in ends if e is not None}
