"""The frozen text-to-image decoder: one interface over diffusers pipelines shaped like Stable Diffusion.

A decoder is a tokenizer, a text encoder (CLIP-style, or any transformers encoder), a
`UNet2DConditionModel`, an optional VAE (latent diffusion) and a scheduler, stored as a diffusers
pipeline folder (`model_index.json` + one subfolder per component) or a hub id. The same class
serves Stable Diffusion 1.x/2.x and the project's own micro models, which are the same diffusers
classes with small configs; `from_pretrained` gives a folder with a second text encoder (Stable
Diffusion XL) to the subclass in `sdxl.py`.

Contract:
- images are float (B, 3, H, W) in [-1, 1] at `resolution`;
- `soft_text_embeddings(probs)` maps token probabilities (B, N, V) to the text encoder's hidden
  states (B, T, D) for the token sequence [start, N tokens, end, pad...] exactly as the tokenizer
  lays it out, so one-hot rows of real ids equal `text_encoder(input_ids)`;
- "text states" are whatever `predict` conditions the UNet on, one tensor (B, ...) per batch of texts:
  here the hidden states (B, T, D) (SDXL packs more, see `sdxl.py`); callers only batch, index and
  move them, and `unconditional_states` is classifier-free guidance's empty text;
- `denoising_loss` is the loss the decoder was trained with (prediction type read from its
  scheduler config), one timestep per sample, returning (B,);
- every parameter is frozen; gradients flow *through* the decoder, never *into* it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .pipeline_folder import DecoderLoadError, LazyComponent, has_component, library_of, read_index
from .vocabulary import vocabulary_mask

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TextToImageDecoder(nn.Module):
    """A frozen diffusers text-to-image model with a differentiable soft-token text path."""

    PIPELINE_CLASS = "StableDiffusionPipeline"  # what `save_pretrained` writes (with a VAE)
    COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")

    def __init__(self, tokenizer, text_encoder, unet, scheduler, vae=None, source: str = ""):
        """Any component but the tokenizer may be a `LazyComponent`: loaded on first use, then moved
        and cast as the decoder was (`.to()` calls made before it loaded are replayed on it)."""
        super().__init__()
        self._lazy: dict[str, LazyComponent] = {}
        self._deferred: list = []  # the `_apply` functions (to, half, ...) lazy components still need
        parts = {"text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": scheduler}
        self.tokenizer = tokenizer
        for name, part in parts.items():
            if isinstance(part, LazyComponent):
                self._lazy[name] = part
            else:
                setattr(self, name, part)
        self.source = source
        self.requires_grad_(False)
        self.eval()

    def __getattr__(self, name: str):
        lazy = self.__dict__.get("_lazy")
        if lazy and name in lazy:
            part = lazy[name].load()
            if isinstance(part, nn.Module):
                for fn in self._deferred:
                    part._apply(fn)
                part.requires_grad_(False).eval()
            del lazy[name]
            setattr(self, name, part)
            return part
        return super().__getattr__(name)

    def _apply(self, fn, recurse: bool = True):
        if self._lazy:
            self._deferred.append(fn)
        return super()._apply(fn, recurse)

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: str | torch.dtype = "float32", lazy: bool = False
    ) -> TextToImageDecoder:
        """Load a diffusers pipeline folder, hub id or `bundled:NAME` with the classes named in its
        model_index.json; one with a second text encoder (`StableDiffusionXLPipeline`) as an `SDXLDecoder`.

        `lazy`: load only the tokenizer(s) now, and each other component when it is first used. Writing
        text (`DeDiffusion.encode`) needs the tokenizer alone, so it starts without importing the
        diffusers and transformers model classes (seconds on a CPU).
        """
        from ..assets import resolve

        source, path = str(path), resolve(path)
        index = read_index(path)
        if cls is TextToImageDecoder and has_component(index, "text_encoder_2"):
            from .sdxl import SDXLDecoder  # a second text encoder: Stable Diffusion XL

            cls = SDXLDecoder
        decoder = cls(**cls._load_parts(path, index, lazy), source=source)
        return decoder.to(dtype=DTYPES[dtype] if isinstance(dtype, str) else dtype)

    @classmethod
    def _load_parts(
        cls, path, index: dict, lazy: bool, models=("text_encoder", "unet", "scheduler"), tokenizers=("tokenizer",)
    ) -> dict:
        """The constructor's components from a folder: tokenizers loaded, the other `models` (and the
        VAE, if any) loaded or `LazyComponent`s."""
        for name in (*tokenizers, *models):
            if not has_component(index, name):
                raise DecoderLoadError(f"decoder '{path}' has no {name} in its model_index.json")
        names = models + (("vae",) if has_component(index, "vae") else ())
        parts = {name: LazyComponent(path, name, index[name]) for name in names}
        if not lazy:
            parts = {name: part.load() for name, part in parts.items()}
        return parts | {name: LazyComponent(path, name, index[name]).load() for name in tokenizers}

    def save_pretrained(self, path: str | Path) -> None:
        """Write a diffusers pipeline folder (atomically); with a VAE it loads as `PIPELINE_CLASS`
        (`StableDiffusionPipeline` here), without one (pixel space) each component loads with its own
        class's `from_pretrained`."""
        import diffusers

        from ..atomic import atomic_folder

        pipeline = self.PIPELINE_CLASS if self.vae is not None else "DiffusionPipeline"
        index = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__}
        with atomic_folder(Path(path)) as tmp:
            for name in self.COMPONENTS:
                part = getattr(self, name)
                index[name] = [None, None] if part is None else [library_of(part), type(part).__name__]
                if part is not None:
                    part.save_pretrained(tmp / name)
            index.update(self._index_extras())
            (tmp / "model_index.json").write_text(json.dumps(index, indent=2))

    def _index_extras(self) -> dict:
        """model_index.json entries beyond the components: the pipeline's optional parts and flags."""
        return dict(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)

    def train(self, mode: bool = True) -> TextToImageDecoder:
        """Frozen: always stays in eval mode (no dropout, fixed normalisation statistics)."""
        return super().train(False)

    # ---- facts about the decoder --------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vocab_size(self) -> int:
        stored = self._text_encoder_fact("vocab_size")
        return int(stored) if stored else self.text_encoder.get_input_embeddings().weight.shape[0]

    @property
    def max_length(self) -> int:
        """Text sequence length T the decoder was trained with (start + tokens + end + padding)."""
        limit = self._text_encoder_fact("max_position_embeddings")
        if limit is None:
            limit = getattr(self.text_encoder.config, "max_position_embeddings", 77)
        return min(int(self.tokenizer.model_max_length), int(limit))

    def _text_encoder_fact(self, key: str):
        """`key` of the text encoder's config.json while the text encoder is not loaded (None once it
        is, or when the file lacks it): vocabulary size and text length without the model classes."""
        lazy = self._lazy.get("text_encoder")
        return lazy.config.get(key) if lazy is not None else None

    @property
    def max_tokens(self) -> int:
        """The most tokens the encoder may write: the text length less the start and end tokens."""
        start, _, _ = self._special_ids()
        return self.max_length - 1 - (start is not None)

    @property
    def vae_scale_factor(self) -> int:
        vae = self._config_of("vae")
        return 2 ** (len(vae["block_out_channels"]) - 1) if vae is not None else 1

    @property
    def resolution(self) -> int:
        """Image side in pixels the decoder generates and trains on (read without loading the weights)."""
        return int(self._config_of("unet")["sample_size"]) * self.vae_scale_factor

    def _config_of(self, name: str):
        """A component's config (None without the component), from its config.json while it is not loaded."""
        lazy = self._lazy.get(name)
        if lazy is not None and lazy.config:
            return lazy.config
        part = getattr(self, name)
        return None if part is None else part.config

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), size, size)

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.get("prediction_type", "epsilon")

    def fingerprint(self) -> str:
        """A hash of the vocabulary and text-embedding shape: a trained encoder only fits a decoder
        with the same fingerprint."""
        vocab = sorted(self.tokenizer.get_vocab().items())
        payload = json.dumps([vocab, self.vocab_size, self.max_length]).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    # ---- text ---------------------------------------------------------------------------------

    def token_strings(self) -> list[str]:
        """The spelling of every id in the embedding table ('' for ids the tokenizer lacks)."""
        table = {i: t for t, i in self.tokenizer.get_vocab().items()}
        return [table.get(i, "") for i in range(self.vocab_size)]

    def vocabulary_mask(
        self,
        exclude_punctuation: bool = True,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        whole_words: bool = False,
    ) -> torch.Tensor:
        """Bool (V,): which tokens the encoder may write; see `vocabulary.vocabulary_mask`."""
        special = [i for i in self.tokenizer.all_special_ids if i < self.vocab_size]
        tokenize = self.read_back if whole_words else None
        return vocabulary_mask(self.token_strings(), special, exclude_punctuation, allow, deny, self.source, tokenize)

    def read_back(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text's tokens, without special tokens, untruncated."""
        return list(self.tokenizer(list(texts), add_special_tokens=False, verbose=False).input_ids)

    def _special_ids(self) -> tuple[int | None, int, int]:
        return special_ids(self.tokenizer)

    @property
    def end_id(self) -> int:
        """The end-of-text token's id (the tokenizer's eos, or sep for WordPiece)."""
        return self._special_ids()[1]

    def template_ids(self, num_tokens: int, tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids [start, pad x num_tokens, end, pad...] and the tokenizer's attention mask, both (T,), with
        the special ids of `tokenizer` (default: the decoder's).

        The num_tokens placeholder positions start at index 1 (0 without a start token).
        """
        if num_tokens > self.max_tokens:
            raise ValueError(f"num_tokens={num_tokens} exceeds the decoder's limit of {self.max_tokens} tokens")
        start, end, pad = special_ids(tokenizer or self.tokenizer)
        ids = ([start] if start is not None else []) + [pad] * num_tokens + [end]
        attention = [1] * len(ids) + [0] * (self.max_length - len(ids))
        ids += [pad] * (self.max_length - len(ids))
        return torch.tensor(ids, device=self.device), torch.tensor(attention, device=self.device)

    def tokenize(self, texts: Sequence[str], tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and attention mask (B, T) of `tokenizer` (default: the decoder's), padded/truncated to
        `max_length`."""
        out = (tokenizer or self.tokenizer)(
            list(texts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return out.input_ids.to(self.device), out.attention_mask.to(self.device)

    def text_token_ids(self, text: str) -> list[int]:
        """The ids of `text`'s tokens, without start, end or padding."""
        return self.read_back([text])[0]

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text-encoder hidden states (B, T, D) for plain strings, as the pipeline would compute them."""
        ids, attention = self.tokenize(texts)
        return self._run_text_encoder(ids, attention)

    def soft_text_embeddings(self, probs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, D) for token probabilities (B, N, V), differentiable in `probs`.

        The rows multiply the frozen token-embedding table; the result replaces the embeddings of the
        N placeholder positions of `template_ids(N)` (via a forward hook on the embedding layer, so
        the text encoder's own forward - positions, masks, layers, final norm - runs unchanged).
        """
        table = self.text_encoder.get_input_embeddings()
        return self.text_states_from_embeddings(probs.to(table.weight.dtype) @ table.weight)

    def text_states_from_embeddings(self, soft: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, D) for N input embeddings (B, N, D) placed at the placeholder positions
        of `template_ids(N)`; `soft_text_embeddings` is this with probabilities times the table."""
        batch, num_tokens, _ = soft.shape
        table = self.text_encoder.get_input_embeddings()
        ids, attention = (t.expand(batch, -1) for t in self.template_ids(num_tokens))
        with replaced_embeddings(table, soft, int(self._special_ids()[0] is not None)):
            return self._run_text_encoder(ids, attention)

    def token_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, D) for token ids (B, N) at the placeholder positions of `template_ids(N)`:
        what `soft_text_embeddings` gives for their one-hot rows, without the matrix product."""
        return self._run_text_encoder(*self.filled_ids(tokens))

    def filled_ids(self, tokens: torch.Tensor, tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`template_ids(N, tokenizer)` with token ids (B, N) at the placeholders: ids and mask (B, T)."""
        batch, num_tokens = tokens.shape
        ids, attention = self.template_ids(num_tokens, tokenizer)
        offset = int(self._special_ids()[0] is not None)
        ids = ids.expand(batch, -1).clone()
        ids[:, offset : offset + num_tokens] = tokens
        return ids, attention.expand(batch, -1)

    def _run_text_encoder(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        # diffusers' Stable Diffusion pipelines pass the mask only when the config asks for it
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        out = self.text_encoder(ids, attention_mask=attention if use_mask else None)
        return out[0]

    def decode_tokens(self, ids: torch.Tensor | Sequence[torch.Tensor]) -> list[str]:
        """Token ids (B, N), or B rows of any length, -> strings, as the tokenizer spells them."""
        return [self.tokenizer.decode(row.tolist(), skip_special_tokens=True).strip() for row in ids]

    # ---- diffusion ------------------------------------------------------------------------------

    @torch.no_grad()
    def to_latents(self, images: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> what the UNet denoises (B, C, h, w), fp32."""
        images = images.to(self.device, self.dtype)
        if self.vae is None:
            return images.float()
        dist = self.vae.encode(images).latent_dist
        noise = per_sample_randn(dist.mean.shape[1:], generators, self.device) if generators else 0.0
        latents = dist.mean.float() + dist.std.float() * noise
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latents.clamp(-1, 1)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = latents / self.vae.config.scaling_factor + shift
        return self.vae.decode(latents.to(self.dtype)).sample.float().clamp(-1, 1)

    def denoising_loss(
        self,
        images: torch.Tensor,
        text_states: torch.Tensor,
        generators: Sequence[torch.Generator] | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        timestep_bias: float = 0.0,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-sample denoising MSE (B,) of the decoder's own objective, conditioned on `text_states`.

        Random timesteps/noise come from one generator per sample, unless given explicitly; timesteps
        are drawn by `sample_timesteps` with `timestep_bias`. `weights` (B, 1, H, W) >= 0 at image
        resolution, if given, weight the squared error where they lie (see `latent_loss`).
        """
        if generators is None and (timesteps is None or noise is None):
            raise ValueError("denoising_loss needs per-sample generators, or both timesteps and noise")
        if timesteps is None:
            timesteps = sample_timesteps(generators, self.scheduler.config.num_train_timesteps, timestep_bias)
        latents = self.to_latents(images, generators)
        if noise is None:
            noise = per_sample_randn(latents.shape[1:], generators, self.device)
        timesteps, noise = timesteps.to(self.device), noise.to(self.device, torch.float32)
        return self.latent_loss(latents, text_states, timesteps, noise, weights)

    def latent_loss(
        self,
        latents: torch.Tensor,
        text_states: torch.Tensor,
        timesteps: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`denoising_loss` on latents (B, C, h, w) that are already what the UNet denoises: (B,).

        With `weights` (B, 1, H, W), each latent cell's squared error counts with the largest weight of
        the image pixels it covers, and each sample's loss is the weighted mean (equal weights give
        the plain mean).
        """
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.predict(noisy, timesteps, text_states)
        error = (prediction.float() - self._target(latents, noise, timesteps)).pow(2).mean(dim=1, keepdim=True)
        if weights is None:
            return error.mean(dim=(1, 2, 3))
        if weights.shape[0] != error.shape[0] or weights.shape[1] != 1 or (weights < 0).any():
            raise ValueError(f"weights must be (B={error.shape[0]}, 1, H, W) and >= 0, got {tuple(weights.shape)}")
        weights = torch.nn.functional.adaptive_max_pool2d(weights.to(error), error.shape[-2:])
        return (weights * error).sum(dim=(1, 2, 3)) / weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)

    @torch.no_grad()
    def fixed_noise_loss(
        self, images: torch.Tensor, text_states: torch.Tensor, timesteps: Sequence[int]
    ) -> torch.Tensor:
        """Denoising loss (len(timesteps), B) of each image at each given timestep, conditioned on
        `text_states` (B, T, D). The noise at timestep t is drawn from seed t, whatever the text, so
        texts (or other prompts) for the same images compare on equal terms."""
        rows = []
        for t in timesteps:
            noise = torch.randn((images.shape[0], *self.latent_shape), generator=torch.Generator().manual_seed(int(t)))
            steps = torch.full((images.shape[0],), int(t))
            rows.append(self.denoising_loss(images, text_states, None, steps, noise))
        return torch.stack(rows)

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor) -> torch.Tensor:
        """The UNet's output (B, C, h, w), in the decoder's dtype, for noisy latents at `timesteps`
        conditioned on `text_states`: the one place the UNet is called (training and sampling)."""
        return self.unet(noisy.to(self.dtype), timesteps, encoder_hidden_states=text_states.to(self.dtype)).sample

    @property
    def noise_scheduler(self):
        """The forward process the loss noises latents with (`add_noise`, `get_velocity`): the scheduler."""
        return self.scheduler

    def unconditional_states(self) -> torch.Tensor:
        """Text states (1, ...) of classifier-free guidance's unconditional branch: the empty prompt."""
        return self.encode_text([""])

    def _target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        kind = self.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        if kind == "sample":
            return latents
        raise ValueError(f"unsupported prediction_type {kind!r} in the decoder's scheduler config ({self.source})")

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str] | None = None,
        text_states: torch.Tensor | None = None,
        guidance_scale: float = 7.5,
        num_inference_steps: int = 50,
        generators: Sequence[torch.Generator] | None = None,
        timestep_spacing: str | None = None,
    ) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] from prompts or text states; see `sampling.generate`."""
        from .sampling import generate

        return generate(self, prompts, text_states, guidance_scale, num_inference_steps, generators, timestep_spacing)


def special_ids(tokenizer) -> tuple[int | None, int, int]:
    """A tokenizer's start (None without one), end and padding ids (WordPiece: cls and sep)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    return start, end, pad


@contextlib.contextmanager
def replaced_embeddings(table: nn.Module, soft: torch.Tensor, offset: int) -> Iterator[None]:
    """Within: the embedding layer `table` outputs `soft` (B, N, D) at positions offset..offset+N, its own
    lookups elsewhere (a forward hook, so the text encoder's own forward runs unchanged)."""

    def replace(module, inputs, output):  # output: (B, T, D)
        return torch.cat([output[:, :offset], soft.to(output.dtype), output[:, offset + soft.shape[1] :]], dim=1)

    handle = table.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def sample_timesteps(
    generators: Sequence[torch.Generator], num_train_timesteps: int, bias: float = 0.0
) -> torch.Tensor:
    """One training timestep per generator, with density proportional to t ** bias (0: uniform).

    High-noise steps are where the text decides the layout; low-noise steps mostly denoise texture
    that no text names. A bias of 3 puts half the draws above t = 0.84 T.
    """
    if bias < 0:
        raise ValueError(f"timestep_bias must be >= 0, got {bias}")
    u = torch.cat([torch.rand(1, generator=g, device=g.device) for g in generators])
    return (u.pow(1.0 / (1.0 + bias)) * num_train_timesteps).long().clamp(max=num_train_timesteps - 1)


def per_sample_randn(shape: Sequence[int], generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """Normal noise (B, *shape), row b drawn from generators[b]: independent of batch layout."""
    return torch.stack([torch.randn(tuple(shape), generator=g, device=device) for g in generators])
