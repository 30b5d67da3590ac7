"""Stable Diffusion XL as the training decoder (models/sdxl.py), on a tiny random SDXL-class pipeline
built from configs: CLIP's real vocabulary in both tokenizers (the second pads with "!", as SDXL's
does), two text encoders of different widths (the second with a projection), a `text_time` UNet, a VAE
and SDXL's Euler scheduler. Checked against diffusers' own `StableDiffusionXLPipeline`."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from clip_vocab import clip_tokenizer
from conftest import TINY_ENCODER, TINY_TRAIN, tiny_config

from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.pipeline_folder import DecoderLoadError
from dediffusion.models.sdxl import SDXLDecoder, first_end_weights

MAX_LENGTH = 12  # tokens, start and end included
WIDTHS, POOLED, TIME_EMBED = (16, 24), 8, 4  # the two text encoders' widths; text_encoder_2's projection
TEXTS = ["a red circle", "a large blue square at the top left on a white background and more"]  # the second is cut


def text_encoder(width: int, with_projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=POOLED,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def sdxl_components(vocab_dir) -> dict:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer_2 = clip_tokenizer(vocab_dir, MAX_LENGTH)
    tokenizer_2.pad_token = "!"
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=sum(WIDTHS),
        attention_head_dim=4,
        norm_num_groups=8,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + POOLED,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        scaling_factor=0.13025,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading"
    )
    return dict(
        tokenizer=clip_tokenizer(vocab_dir, MAX_LENGTH),
        tokenizer_2=tokenizer_2,
        text_encoder=text_encoder(WIDTHS[0], False),
        text_encoder_2=text_encoder(WIDTHS[1], True),
        unet=unet,
        vae=vae,
        scheduler=scheduler,
    )


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline

    path = tmp_path_factory.mktemp("pipelines") / "tiny-sdxl"
    components = sdxl_components(tmp_path_factory.mktemp("clip_vocab"))
    StableDiffusionXLPipeline(**components, add_watermarker=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipeline(sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline.from_pretrained(sdxl_dir, add_watermarker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def decoder(sdxl_dir):
    return TextToImageDecoder.from_pretrained(sdxl_dir)


def split(states: torch.Tensor):
    """Packed text states -> hidden states (B, T, D1 + D2), pooled embedding (B, P), the padding after it."""
    return states[:, :-1], states[:, -1, :POOLED], states[:, -1, POOLED:]


def test_the_folder_loads_as_sdxl_and_lazily_with_its_tokenizers_alone(sdxl_dir):
    decoder = TextToImageDecoder.from_pretrained(sdxl_dir, lazy=True)
    assert isinstance(decoder, SDXLDecoder) and {"text_encoder", "text_encoder_2", "unet"} <= set(decoder._lazy)
    assert (decoder.max_tokens, decoder.vocab_size, decoder.resolution) == (MAX_LENGTH - 2, 49408, 16)
    assert decoder.encode_text(["red"]).shape == (1, MAX_LENGTH + 1, sum(WIDTHS))  # loads on first use


def test_text_states_equal_the_pipelines_encode_prompt(decoder, pipeline):
    hidden, _, pooled, _ = pipeline.encode_prompt(TEXTS, device="cpu", do_classifier_free_guidance=False)
    ours, ours_pooled, padding = split(decoder.encode_text(TEXTS))
    torch.testing.assert_close(ours, hidden, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours_pooled, pooled, rtol=0, atol=1e-6)
    assert not padding.any()
    for text in TEXTS[:1]:  # a text that fits: one-hot rows of its ids, soft and hard, give the same states
        ids = torch.tensor(decoder.text_token_ids(text))[None]
        expected = decoder.encode_text([text])
        torch.testing.assert_close(decoder.soft_text_embeddings(F.one_hot(ids, 49408).float()), expected)
        torch.testing.assert_close(decoder.token_states(ids), expected)


def test_a_text_that_ends_early_pools_at_its_first_end(decoder):
    """An encoder that may end its text (tokens.allow_end) writes end tokens; pooling follows the first."""
    words = decoder.text_token_ids("red circle")
    tokens = torch.tensor([words + [decoder.end_id] * 3])
    expected = decoder.encode_text(["red circle"])
    for states in (decoder.token_states(tokens), decoder.soft_text_embeddings(F.one_hot(tokens, 49408).float())):
        torch.testing.assert_close(split(states)[1], split(expected)[1])
        until_end = 1 + len(words) + 1  # start, words, end: the same in both layouts
        torch.testing.assert_close(states[:, :until_end], expected[:, :until_end])
    weights = first_end_weights(torch.tensor([[0.0, 0.5, 0.5, 1.0, 1.0]]))
    torch.testing.assert_close(weights, torch.tensor([[0.0, 0.5, 0.25, 0.25, 0.0]]))


def test_generate_draws_what_the_pipeline_draws_with_ddim(decoder, pipeline):
    from diffusers import DDIMScheduler

    from dediffusion.models.dediffusion import sample_generators

    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    settings = dict(guidance_scale=3.0, num_inference_steps=3)
    expected = pipeline(prompt=TEXTS, generator=sample_generators([0, 1], "cpu"), output_type="pt", **settings).images
    ours = decoder.generate(TEXTS, generators=sample_generators([0, 1], "cpu"), **settings)
    assert ours.shape == (2, 3, 16, 16) and ours.std() > 0
    torch.testing.assert_close(ours * 0.5 + 0.5, expected, rtol=0, atol=1e-5)
    states = decoder.token_states(torch.tensor([decoder.text_token_ids(TEXTS[0])]))  # as the sleep phase draws
    again = decoder.generate(None, states, generators=sample_generators([0], "cpu"), **settings)
    torch.testing.assert_close(again, ours[:1])


def test_the_training_noise_is_ddpm_on_the_schedulers_betas(decoder):
    assert type(decoder.scheduler).__name__ == "EulerDiscreteScheduler"
    latents, noise, steps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    alpha_bar = decoder.noise_scheduler.alphas_cumprod[steps].view(2, 1, 1, 1)
    expected = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(decoder.noise_scheduler.add_noise(latents, noise, steps), expected)


def test_gradients_reach_the_encoder_the_decoder_stays_frozen_and_the_loss_falls(decoder):
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    model = DeDiffusion(tiny_config("", "", "tokens.whole_words=false", "tokens.allow_end=true"), decoder)
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=3e-3)
    images, seeds = torch.rand(4, 3, 16, 16) * 2 - 1, torch.arange(4)  # the same draws every step
    losses = []
    for step in range(8):  # the last backward without a step: residual branches start at zero, so the first
        optimizer.zero_grad()  # gradients cannot yet reach the layers inside them
        loss = model(images, seeds, 0)["loss"]
        loss.backward()
        losses.append(loss.item())
        if step < 7:
            optimizer.step()
    trainable = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
    silent = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert trainable and not silent, silent
    assert all(math.isfinite(x) for x in losses) and all(b < a for a, b in zip(losses, losses[1:])), losses
    assert all(p.grad is None and not p.requires_grad for p in decoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in decoder.state_dict().items())


def test_dediffusion_train_runs_against_the_sdxl_folder(sdxl_dir, quadrant_folder, tmp_path):
    from dediffusion.cli import main

    sets = [f"decoder.path={sdxl_dir}", f"train.data={quadrant_folder}", "train.steps=3", *TINY_ENCODER, *TINY_TRAIN]
    assert main(["train", "-o", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)]]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in records)
    model = DeDiffusion.from_pretrained(tmp_path / "run" / "final")
    assert isinstance(model.decoder, SDXLDecoder)
    texts = model.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert len(texts) == 2 and all(texts)


def test_save_pretrained_writes_an_sdxl_folder_that_loads_back(decoder, tmp_path):
    decoder.save_pretrained(tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline" and index["force_zeros_for_empty_prompt"] is True
    again = TextToImageDecoder.from_pretrained(tmp_path / "copy")
    torch.testing.assert_close(again.encode_text(TEXTS), decoder.encode_text(TEXTS), rtol=0, atol=0)


def test_tokenizers_that_disagree_are_refused(decoder, tmp_path):
    from dediffusion.models.micro import word_tokenizer

    parts = dict(text_encoder=decoder.text_encoder, text_encoder_2=decoder.text_encoder_2, unet=decoder.unet)
    parts.update(scheduler=decoder.scheduler, tokenizer=decoder.tokenizer)
    with pytest.raises(DecoderLoadError, match="share one vocabulary"):
        SDXLDecoder(tokenizer_2=word_tokenizer(["red", "blue"], MAX_LENGTH), **parts)
    shorter = clip_tokenizer(tmp_path, MAX_LENGTH - 1)
    with pytest.raises(DecoderLoadError, match="position by position"):
        SDXLDecoder(tokenizer_2=shorter, **parts)
    with pytest.raises(NotImplementedError, match="two embedding tables"):
        decoder.text_states_from_embeddings(torch.zeros(1, 2, WIDTHS[0]))
