"""Micro text-to-image decoders: the diffusers/transformers classes of Stable Diffusion with small configs.

`build_micro_decoder` returns an untrained `TextToImageDecoder` (a word-level tokenizer over a closed
vocabulary, `CLIPTextModel`, `UNet2DConditionModel`, optional `AutoencoderKL`, `DDPMScheduler`).
Tests use it as a stand-in for Stable Diffusion; the bundled world pretrains it. Because the classes
are the real ones, `save_pretrained`/`from_pretrained` and every code path are those of a full model.
"""

from __future__ import annotations

from collections.abc import Sequence

from .decoder import TextToImageDecoder

SPECIAL_TOKENS = {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "pad": "<|pad|>", "unk": "<|unk|>"}


def word_tokenizer(words: Sequence[str], max_length: int):
    """A word-level fast tokenizer: lowercase, split on whitespace and punctuation, one id per known
    word (unknown words map to the unk token), and Stable Diffusion's layout [start, words, end, pad...]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS.values())}
    for word in words:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    bos, eos = SPECIAL_TOKENS["bos"], SPECIAL_TOKENS["eos"]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=bos,
        eos_token=eos,
        pad_token=SPECIAL_TOKENS["pad"],
        unk_token=SPECIAL_TOKENS["unk"],
        model_max_length=max_length,
    )


def build_micro_decoder(
    words: Sequence[str],
    resolution: int = 16,
    latent: bool = True,
    prediction_type: str = "epsilon",
    max_length: int = 16,
    text_width: int = 32,
    text_layers: int = 2,
    unet_channels: tuple[int, ...] = (32, 64),
    latent_channels: int = 4,
    beta_schedule: str = "squaredcos_cap_v2",
    vae_channels: tuple[int, ...] = (16, 32),
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    cross_attention: tuple[bool, ...] | None = None,
    text_heads: int | None = None,
    tokenizer=None,
) -> TextToImageDecoder:
    """An untrained micro decoder.

    `tokenizer` (default: a word-level one over `words`) may be any transformers tokenizer, e.g. CLIP's
    BPE: the text encoder's vocabulary follows it.

    `latent=True` adds a VAE that divides the resolution by 2 ** (len(vae_channels) - 1).
    `cross_attention[i]` says whether UNet level i (highest resolution first) attends to the text;
    the default is the first level only. `text_heads` defaults to text_width // 16.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tokenizer or word_tokenizer(words, max_length)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_width,
            intermediate_size=text_width * 4,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads or max(text_width // 16, 1),
            max_position_embeddings=max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = _micro_vae(latent_channels, vae_channels) if latent else None
    channels = latent_channels if latent else 3
    attend = cross_attention or (True,) + (False,) * (len(unet_channels) - 1)
    if len(attend) != len(unet_channels):
        raise ValueError(f"cross_attention needs one flag per UNet level ({len(unet_channels)}), got {attend}")
    unet = UNet2DConditionModel(
        sample_size=resolution // (2 ** (len(vae_channels) - 1) if latent else 1),
        in_channels=channels,
        out_channels=channels,
        block_out_channels=unet_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attend),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)),
        layers_per_block=layers_per_block,
        cross_attention_dim=text_width,
        attention_head_dim=attention_head_dim,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
    return TextToImageDecoder(tokenizer, text_encoder, unet, scheduler, vae=vae, source="micro")


def _micro_vae(latent_channels: int, channels: tuple[int, ...] = (16, 32)):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        layers_per_block=1,
        norm_num_groups=8,
        scaling_factor=1.0,
    )
