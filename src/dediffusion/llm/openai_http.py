"""Any OpenAI-compatible HTTP server (llama.cpp server, vLLM, Ollama, ...) as a `LanguageModel`.

Standard library only (urllib). Both calls use the legacy `POST {base}/v1/completions` endpoint:

- `score`: the text `prompt + " " + choice` is sent with `echo=true, logprobs=1, max_tokens=0` (1 if
  the server refuses 0) and the log-probabilities of the echoed tokens from the end of the prompt on
  are summed (tokens are located by their `text_offset`). Servers that do not echo prompt
  log-probabilities cannot score choices; that is a clear `LLMError`.
- `generate`: `temperature=0`, `max_tokens=max_new_tokens`, and `stop` passed to the server (and
  applied again here, in case the server ignores it).

An API key is sent as a bearer token when given or when `OPENAI_API_KEY` is set.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence

from .base import LLMError, cut_at_stop

logger = logging.getLogger(__name__)

NO_PROMPT_LOGPROBS = (
    "{url} does not return prompt log-probabilities (echo+logprobs), which scoring answer choices needs; "
    "use llama.cpp server or vLLM, or a local model (--llm smollm2 or a transformers folder)"
)


class LLMHTTPError(LLMError):
    """The server answered with an HTTP error status."""

    def __init__(self, url: str, status: int, detail: str):
        super().__init__(f"{url} answered HTTP {status}: {detail}")
        self.status = status


class OpenAIHTTPLM:
    """Choice scoring and greedy generation through an OpenAI-compatible completions endpoint.

    Args:
        base_url: the server, e.g. `http://localhost:8080` (a trailing `/v1` is accepted).
        model: the served model name sent with every request.
        api_key: bearer token; default `$OPENAI_API_KEY` if set, else none.
        timeout: seconds to wait for each request.
    """

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None, timeout: float = 120.0):
        self.base_url = normalise_base_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_tokens_when_scoring = 0  # raised to 1 for servers that refuse 0

    def score(self, prompts: Sequence[str], choices: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each prompt, the summed log-likelihood of each choice as the continuation " choice"."""
        if len(prompts) != len(choices):
            raise ValueError(f"{len(prompts)} prompts but {len(choices)} rows of choices")
        return [[self._score_one(prompt, choice) for choice in row] for prompt, row in zip(prompts, choices)]

    def _score_one(self, prompt: str, choice: str) -> float:
        text = prompt + " " + choice
        body = {"model": self.model, "prompt": text, "echo": True, "logprobs": 1, "temperature": 0}
        try:
            answer = self.request("/v1/completions", {**body, "max_tokens": self.max_tokens_when_scoring})
        except LLMHTTPError as error:
            if error.status != 400 or self.max_tokens_when_scoring != 0:
                raise
            logger.debug("server refused max_tokens=0 (%s); scoring with max_tokens=1", error)
            self.max_tokens_when_scoring = 1
            answer = self.request("/v1/completions", {**body, "max_tokens": 1})
        return continuation_logprob(answer, text, len(prompt), self.base_url + "/v1/completions")

    def generate(self, prompt: str, max_new_tokens: int = 32, stop: Sequence[str] = ()) -> str:
        """The server's temperature-0 continuation, cut before the first stop string."""
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0}
        if stop:
            body["stop"] = list(stop)
        answer = self.request("/v1/completions", body)
        try:
            text = answer["choices"][0]["text"]
        except (KeyError, IndexError, TypeError) as error:
            raise LLMError(f"{self.base_url}/v1/completions returned no completion text: {answer!r:.300}") from error
        return cut_at_stop(text, stop)[0]

    def served_model(self) -> str:
        """The first model `GET /v1/models` lists, or "default" where the server lists none."""
        try:
            listing = self.request("/v1/models")
        except LLMHTTPError as error:
            logger.debug("no model listing (%s); using the name 'default'", error)
            return "default"
        models = listing.get("data") if isinstance(listing, dict) else None
        if models and isinstance(models[0], dict) and models[0].get("id"):
            return str(models[0]["id"])
        return "default"

    def request(self, path: str, body: dict | None = None) -> dict:
        """GET (no body) or POST JSON to `base_url + path`; the decoded JSON answer.

        Raises:
            LLMHTTPError: an HTTP error status. LLMError: unreachable server or an answer that is not JSON.
        """
        url = self.base_url + path
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise LLMHTTPError(url, error.code, error.read()[:500].decode(errors="replace").strip()) from error
        except (urllib.error.URLError, OSError) as error:  # refused, unknown host, timeout
            reason = getattr(error, "reason", error)
            raise LLMError(f"could not reach {url}: {reason}. Is the server running at {self.base_url}?") from error
        try:
            return json.loads(raw)
        except ValueError as error:
            raise LLMError(f"{url} did not answer with JSON: {raw[:200]!r}") from error


def normalise_base_url(url: str) -> str:
    """`http://host:port` from `http://host:port/`, `http://host:port/v1` or `.../v1/`."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def continuation_logprob(answer: dict, text: str, start: int, url: str) -> float:
    """Sum of the echoed token log-probabilities from character `start` of `text` to its end.

    A token that straddles `start` counts (its log-probability includes the choice's first
    characters); tokens at or after `len(text)` were generated, not echoed, and are left out.
    """
    try:
        choice = answer["choices"][0]
        logprobs = choice.get("logprobs") or {}
        tokens, values, offsets = logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"]
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise LLMError(NO_PROMPT_LOGPROBS.format(url=url)) from error
    if not str(choice.get("text", "")).startswith(text) or not (len(tokens) == len(values) == len(offsets)):
        raise LLMError(NO_PROMPT_LOGPROBS.format(url=url))
    picked = [v for t, v, o in zip(tokens, values, offsets) if o < len(text) and o + len(t) > start]
    if not picked or any(v is None for v in picked):
        raise LLMError(NO_PROMPT_LOGPROBS.format(url=url))
    return float(sum(picked))
