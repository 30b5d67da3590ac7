"""Stable Diffusion XL as the frozen decoder: one text read by two CLIP text encoders.

SDXL conditions its UNet on three things (diffusers' `StableDiffusionXLPipeline.encode_prompt` and
`__call__`, which this module follows exactly):
- hidden states (B, T, D1 + D2): the penultimate layer of `text_encoder` and of `text_encoder_2`,
  joined position by position on the feature axis;
- a pooled embedding (B, P): `text_encoder_2`'s projection of its last layer at the text's end token;
- six time ids: original size, crop corner, target size, here (R, R, 0, 0, R, R) at the decoder's
  resolution R: the pipeline's defaults, and what an uncropped training image at R is.

One text, one vocabulary. SDXL's two tokenizers are CLIP's BPE over the same 49,408 tokens (the
second pads with "!" instead of the end token), so one Gumbel distribution (B, N, V) multiplies both
embedding tables, and the text the encoder writes is the text both encoders read. A decoder whose
tokenizers disagree on any id, on the start or end token, or on the text length is refused
(`DecoderLoadError`): there is no consistent way to feed one soft text to two vocabularies.

Text states are one tensor (B, T + 1, D1 + D2): the T hidden rows, then one row holding the pooled
embedding, zero-padded (SDXL: 1280 <= 2048). So everything that batches, indexes or moves text states
(sampling, search, sleep) works unchanged, and `predict` unpacks them for the UNet.

Pooling where the text ends: the pipeline pools at the first end token. The encoder may write end
tokens (`tokens.allow_end`), so the soft path pools the expectation over where the first end falls,
sum_t P(first end at t) h_t, which for one-hot rows is exactly the pipeline's position.

Exactness (as in `decoder.py`): one-hot rows of a text's ids give `encode_prompt`'s states and pooled
embedding; `generate` is the pipeline's sampling with a DDIM scheduler; the unconditional branch is
zeros when the folder sets `force_zeros_for_empty_prompt` (SDXL base does), else the empty prompt.

Training noise: SDXL folders ship `EulerDiscreteScheduler`, whose `add_noise` works in sigma space;
the loss noises latents with DDPM's forward process on the same config's betas instead, as diffusers'
own SDXL training script does. Not supported: `text_states_from_embeddings` (continuous embeddings
would need one per table), `clip_skip`, EDM or flow-matching schedulers, and float16 with SDXL's
original VAE (it overflows there: use bfloat16, or a float16-fixed VAE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .decoder import TextToImageDecoder, replaced_embeddings, special_ids
from .pipeline_folder import DecoderLoadError, LazyComponent

NUM_TIME_IDS = 6  # original (h, w), crop corner (top, left), target (h, w)


class SDXLDecoder(TextToImageDecoder):
    """A frozen SDXL-class pipeline (two text encoders, pooled text and time-id conditioning)."""

    PIPELINE_CLASS = "StableDiffusionXLPipeline"
    COMPONENTS = ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "unet", "vae", "scheduler")

    def __init__(
        self,
        tokenizer,
        tokenizer_2,
        text_encoder,
        text_encoder_2,
        unet,
        scheduler,
        vae=None,
        source: str = "",
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(tokenizer, text_encoder, unet, scheduler, vae, source)
        check_tokenizers(tokenizer, tokenizer_2, source)
        unet_config = self._config_of("unet")
        if unet_config and unet_config.get("addition_embed_type") != "text_time":
            raise DecoderLoadError(f"decoder '{source}': an SDXL UNet needs addition_embed_type 'text_time'")
        self.tokenizer_2 = tokenizer_2
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        self._noise_scheduler = None
        if isinstance(text_encoder_2, LazyComponent):
            self._lazy["text_encoder_2"] = text_encoder_2
        else:
            self.text_encoder_2 = text_encoder_2
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def _load_parts(cls, path, index: dict, lazy: bool) -> dict:
        models = ("text_encoder", "text_encoder_2", "unet", "scheduler")
        parts = super()._load_parts(path, index, lazy, models, ("tokenizer", "tokenizer_2"))
        return parts | {"force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", True))}

    def _index_extras(self) -> dict:
        return dict(
            image_encoder=[None, None],
            feature_extractor=[None, None],
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
        )

    # ---- text ---------------------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text states (B, T + 1, D1 + D2) for plain strings, as the pipeline computes them."""
        ids = [self.tokenize(texts, tokenizer)[0] for tokenizer in (self.tokenizer, self.tokenizer_2)]
        return self._condition(ids, (ids[1] == self.end_id).float())

    def token_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text states for token ids (B, N) at the placeholders: `soft_text_embeddings` of their one-hot rows."""
        ids = [self.filled_ids(tokens, tokenizer)[0] for tokenizer in (self.tokenizer, self.tokenizer_2)]
        return self._condition(ids, (ids[1] == self.end_id).float())

    def soft_text_embeddings(self, probs: torch.Tensor) -> torch.Tensor:
        """Text states (B, T + 1, D1 + D2) for token probabilities (B, N, V), differentiable in `probs`:
        the same rows multiply both encoders' embedding tables at the placeholders of `template_ids(N)`."""
        batch, num_tokens, _ = probs.shape
        ids = [self.template_ids(num_tokens, t)[0].expand(batch, -1) for t in (self.tokenizer, self.tokenizer_2)]
        soft = [probs.to(table.dtype) @ table for table in self._embedding_tables()]  # (B, N, D_k) each
        offset = int(self._special_ids()[0] is not None)
        ends = (ids[1] == self.end_id).to(probs.dtype)  # the template's own end, wherever no token ends first
        ends = torch.cat([ends[:, :offset], probs[..., self.end_id], ends[:, offset + num_tokens :]], dim=1)
        return self._condition(ids, ends, soft)

    def text_states_from_embeddings(self, soft: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            f"decoder '{self.source}' (SDXL) has two embedding tables, so one sequence of input embeddings does "
            "not define its text: pass token probabilities to soft_text_embeddings instead"
        )

    def _embedding_tables(self) -> list[torch.Tensor]:
        tables = [encoder.get_input_embeddings().weight for encoder in (self.text_encoder, self.text_encoder_2)]
        if tables[0].shape[0] != tables[1].shape[0]:
            raise DecoderLoadError(
                f"decoder '{self.source}': the text encoders' embedding tables have {tables[0].shape[0]} and "
                f"{tables[1].shape[0]} rows; one text needs one vocabulary"
            )
        return tables

    def _condition(self, ids: list[torch.Tensor], ends: torch.Tensor, soft=(None, None)) -> torch.Tensor:
        """Packed text states (B, T + 1, D1 + D2) from each encoder's ids (B, T), optionally with soft
        embeddings (B, N, D_k) at the placeholders; `ends` (B, T): each position's probability of
        holding an end token, from which `text_encoder_2`'s pooled embedding is taken."""
        offset = int(self._special_ids()[0] is not None)
        hidden = []
        for encoder, ids_k, soft_k in zip((self.text_encoder, self.text_encoder_2), ids, soft):
            table = encoder.get_input_embeddings()
            with replaced_embeddings(table, soft_k, offset) if soft_k is not None else contextlib.nullcontext():
                out = encoder(ids_k, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # (B, T, D_k): SDXL reads the penultimate layer
        last = out.last_hidden_state  # text_encoder_2's
        pooled = torch.einsum("bt,btd->bd", first_end_weights(ends).to(last.dtype), last)
        return pack(torch.cat(hidden, dim=-1), self.text_encoder_2.text_projection(pooled))

    # ---- diffusion ------------------------------------------------------------------------------

    @property
    def pooled_size(self) -> int:
        """P: what the UNet's added embedding takes beyond the time ids."""
        config = self.unet.config
        return config.projection_class_embeddings_input_dim - NUM_TIME_IDS * config.addition_time_embed_dim

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        states = text_states.to(self.dtype)
        size = self.resolution
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=self.device, dtype=self.dtype)
        added = {"text_embeds": states[:, -1, : self.pooled_size], "time_ids": time_ids.expand(noisy.shape[0], -1)}
        return self.unet(
            noisy.to(self.dtype), timesteps, encoder_hidden_states=states[:, :-1], added_cond_kwargs=added
        ).sample

    @property
    def noise_scheduler(self):
        """DDPM's forward process on the scheduler's config (see the module docstring)."""
        if self._noise_scheduler is None:
            from diffusers import DDPMScheduler

            name = type(self.scheduler).__name__
            if "EDM" in name or "FlowMatch" in name:
                raise DecoderLoadError(f"decoder '{self.source}': training through a {name} is not supported")
            self._noise_scheduler = DDPMScheduler.from_config(self.scheduler.config)
        return self._noise_scheduler

    def unconditional_states(self) -> torch.Tensor:
        states = self.encode_text([""])
        return torch.zeros_like(states) if self.force_zeros_for_empty_prompt else states


def check_tokenizers(tokenizer, tokenizer_2, source: str) -> None:
    """Raise DecoderLoadError unless both tokenizers give every token, start and end the same id and
    read texts of the same length (the pipeline joins the two encoders' states position by position)."""
    if tokenizer.get_vocab() != tokenizer_2.get_vocab() or special_ids(tokenizer)[:2] != special_ids(tokenizer_2)[:2]:
        raise DecoderLoadError(
            f"decoder '{source}': tokenizer and tokenizer_2 must share one vocabulary (the same id for every token, "
            "start and end), as Stable Diffusion XL's do: the encoder writes one text for both text encoders"
        )
    if tokenizer.model_max_length != tokenizer_2.model_max_length:
        raise DecoderLoadError(
            f"decoder '{source}': tokenizer and tokenizer_2 read {tokenizer.model_max_length} and "
            f"{tokenizer_2.model_max_length} tokens; SDXL joins both encoders' states position by position"
        )


def first_end_weights(ends: torch.Tensor) -> torch.Tensor:
    """P(the first end token is at t) (B, T) from independent per-position end probabilities (B, T):
    ends[t] * prod_{s < t} (1 - ends[s]). 0/1 inputs give the one-hot of the first 1."""
    survive = torch.cumprod(1 - ends, dim=1)
    return ends * torch.cat([torch.ones_like(ends[:, :1]), survive[:, :-1]], dim=1)


def pack(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, T, D) and a pooled embedding (B, P), P <= D -> text states (B, T + 1, D)."""
    width, size = hidden.shape[-1], pooled.shape[-1]
    if size > width:
        raise DecoderLoadError(f"a pooled embedding of {size} features does not fit text states {width} wide")
    return torch.cat([hidden, F.pad(pooled.to(hidden.dtype), (0, width - size))[:, None]], dim=1)
