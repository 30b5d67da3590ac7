"""Text-only language models behind one protocol (`LanguageModel`: `score` and `generate`).

    from dediffusion.llm import load_llm
    lm = load_llm("smollm2")                    # or a transformers folder, or "http://localhost:8080"
    lm.score(["Q: sky colour?\\nA:"], [["blue", "red"]])   # summed log-likelihoods of " blue", " red"
    lm.generate("The sky is", max_new_tokens=8, stop=["\\n"])

Clients are imported lazily, so importing this package loads neither transformers nor torch models.
"""

from __future__ import annotations

import importlib

from .base import ChoiceScorer, LanguageModel, LLMError, cut_at_stop
from .load import DEFAULT_LLM, load_llm

_LAZY = {
    "TransformersLM": "dediffusion.llm.transformers_lm",
    "OpenAIHTTPLM": "dediffusion.llm.openai_http",
    "LLMHTTPError": "dediffusion.llm.openai_http",
    "load_smollm2": "dediffusion.llm.smollm2",
    "cache_dir": "dediffusion.llm.smollm2",
}

__all__ = ["ChoiceScorer", "DEFAULT_LLM", "LLMError", "LanguageModel", "cut_at_stop", "load_llm", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dediffusion.llm' has no attribute {name!r}")
