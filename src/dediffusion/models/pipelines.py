"""Any diffusers text-to-image pipeline as a reconstruction target (prompt transfer).

`PipelineTarget.from_pretrained(PATH | HUB_ID)` loads a pipeline through diffusers' own loaders
(`AutoPipelineForText2Image`, then `DiffusionPipeline` for classes the auto loader does not map);
`generate(texts, ...)` draws one image per text, image i from its own seeded generator, and returns
them as (B, 3, H, W) tensors in [-1, 1] like `TextToImageDecoder.generate`.

Each text is cut to what each of the pipeline's tokenizers reads (`fit_to_tokenizer`: whole words,
so no pipeline silently drops a tail or splits a word). A pipeline with a second tokenizer and text
encoder (SDXL) gets its own cut as `prompt_2`. The texts a target was given are kept in
`last_prompts` so callers can show what the pipeline actually read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from .pipeline_folder import DecoderLoadError

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def fit_to_tokenizer(text: str, tokenizer) -> str:
    """The longest whole-word prefix of `text` that the tokenizer encodes within its
    `model_max_length` (start and end tokens included); `text` itself when it fits."""
    words = text.split()

    def fits(count: int) -> bool:
        ids = tokenizer(" ".join(words[:count]), add_special_tokens=True, verbose=False).input_ids
        return len(ids) <= tokenizer.model_max_length

    if fits(len(words)):
        return text
    low, high = 0, len(words)  # fits(low) holds, fits(high) does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    logger.debug("cut a %d-word text to %d words for a %d-token tokenizer", len(words), low, tokenizer.model_max_length)
    return " ".join(words[:low])


def pipeline_prompts(pipeline, texts: Sequence[str]) -> dict[str, list[str]]:
    """`prompt` (and `prompt_2` when the pipeline has a second tokenizer) for `texts`, each cut to its
    tokenizer's length."""
    prompts = {"prompt": [fit_to_tokenizer(t, pipeline.tokenizer) for t in texts]}
    second = getattr(pipeline, "tokenizer_2", None)
    if second is not None:
        prompts["prompt_2"] = [fit_to_tokenizer(t, second) for t in texts]
    return prompts


def load_pipeline(name: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"):
    """A diffusers text-to-image pipeline from a folder or hub id, on `device` in `dtype`, without a
    progress bar. Raises DecoderLoadError naming `name` when diffusers cannot load it."""
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    # float32 is the loaders' default; naming it would only trip the argument's rename in newer diffusers
    kwargs = {} if torch_dtype == torch.float32 else {"torch_dtype": torch_dtype}
    try:
        try:
            pipeline = AutoPipelineForText2Image.from_pretrained(name, **kwargs)
        except ValueError:  # a class the auto loader does not map: let the folder name its own
            pipeline = DiffusionPipeline.from_pretrained(name, **kwargs)
    except (OSError, ValueError, TypeError) as error:
        raise DecoderLoadError(
            f"cannot load '{name}' as a diffusers text-to-image pipeline (a folder with model_index.json, "
            f"or a hub id, which needs a network): {error}"
        ) from error
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


class PipelineTarget:
    """A diffusers text-to-image pipeline that draws images from De-Diffusion text."""

    def __init__(self, pipeline, source: str = ""):
        if getattr(pipeline, "tokenizer", None) is None:
            raise DecoderLoadError(f"pipeline '{source}' has no tokenizer: it is not a text-to-image pipeline")
        self.pipeline, self.source = pipeline, source
        self.last_prompts: dict[str, list[str]] = {}

    @classmethod
    def from_pretrained(
        cls, name: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
    ) -> PipelineTarget:
        return cls(load_pipeline(name, device, dtype), source=name)

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @torch.no_grad()
    def generate(
        self,
        texts: Sequence[str],
        guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        seeds: Sequence[int] | None = None,
        resolution: int | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1], image i drawn from `texts[i]` with seed `seeds[i]` (default i),
        at `resolution` pixels square (default: the pipeline's own)."""
        from ..data.images import to_tensor

        seeds = range(len(texts)) if seeds is None else seeds
        generators = [torch.Generator(self.device).manual_seed(int(seed)) for seed in seeds]
        self.last_prompts = pipeline_prompts(self.pipeline, texts)
        size = {"height": resolution, "width": resolution} if resolution else {}
        output = self.pipeline(
            **self.last_prompts,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generators,
            output_type="pil",
            **size,
        )
        return torch.stack([to_tensor(image.convert("RGB")) for image in output.images])
