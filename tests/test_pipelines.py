"""Any diffusers text-to-image pipeline as a reconstruction target: tiny random SD-class and SDXL-class
pipelines built from configs (CLIP's real BPE vocabulary, offline), loaded back from folders through
diffusers' own loaders, fed De-Diffusion text cut to each tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from clip_vocab import clip_tokenizer

from dediffusion.models.pipeline_folder import DecoderLoadError
from dediffusion.models.pipelines import PipelineTarget, fit_to_tokenizer, pipeline_prompts

MAX_LENGTH = 12  # tokens, start and end included: short, so the cut is exercised


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )


def tiny_text_encoder(with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=16,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def tiny_unet(sdxl: bool = False):
    from diffusers import UNet2DConditionModel

    extra = dict(
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 16,  # six time ids, then the pooled text embedding
    )
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32 if sdxl else 16,  # SDXL: both text encoders' states, concatenated
        attention_head_dim=4,
        norm_num_groups=8,
        **(extra if sdxl else {}),
    )


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    )


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clip_vocab")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory, vocab_dir):
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(0)
    pipeline = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        tokenizer=clip_tokenizer(vocab_dir, MAX_LENGTH),
        unet=tiny_unet(),
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = tmp_path_factory.mktemp("pipelines") / "tiny-sd"
    pipeline.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory, vocab_dir):
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(0)
    pipeline = StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        text_encoder_2=tiny_text_encoder(with_projection=True),
        tokenizer=clip_tokenizer(vocab_dir, MAX_LENGTH),
        tokenizer_2=clip_tokenizer(vocab_dir, MAX_LENGTH),  # SDXL joins both encoders' states: same length
        unet=tiny_unet(sdxl=True),
        scheduler=scheduler(),
    )
    path = tmp_path_factory.mktemp("pipelines") / "tiny-sdxl"
    pipeline.save_pretrained(path)
    return path


TEXT = "a large red circle at the top left and a small blue square at the bottom right on a white background"


def test_fit_to_tokenizer_keeps_whole_words_within_the_limit(vocab_dir):
    tokenizer = clip_tokenizer(vocab_dir, MAX_LENGTH)
    cut = fit_to_tokenizer(TEXT, tokenizer)
    assert TEXT.startswith(cut) and TEXT[len(cut)] == " "  # a prefix ending at a word boundary
    assert len(tokenizer(cut).input_ids) <= MAX_LENGTH
    one_more = " ".join(TEXT.split()[: len(cut.split()) + 1])
    assert len(tokenizer(one_more).input_ids) > MAX_LENGTH  # the longest such prefix
    assert fit_to_tokenizer("red circle", tokenizer) == "red circle"


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_a_tiny_pipeline_redraws_each_text_with_its_own_seed(which, sd_dir, sdxl_dir):
    path = sd_dir if which == "sd" else sdxl_dir
    target = PipelineTarget.from_pretrained(str(path))
    texts = [TEXT, "a red circle"]
    images = target.generate(texts, guidance_scale=3.0, num_inference_steps=2, seeds=[0, 1])
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0
    again = target.generate(texts[::-1], guidance_scale=3.0, num_inference_steps=2, seeds=[1, 0])
    torch.testing.assert_close(again, images.flip(0))  # image i depends on its text and seed only
    assert target.last_prompts["prompt"][0] == "a red circle"  # a short text is left as it is


def test_sdxl_gets_prompt_2_cut_to_its_second_tokenizer(sdxl_dir):
    target = PipelineTarget.from_pretrained(str(sdxl_dir))
    target.pipeline.tokenizer_2.model_max_length = MAX_LENGTH - 4  # a shorter second tokenizer: its own cut
    prompts = pipeline_prompts(target.pipeline, [TEXT])
    assert set(prompts) == {"prompt", "prompt_2"}
    assert prompts["prompt"][0] == fit_to_tokenizer(TEXT, target.pipeline.tokenizer)
    assert prompts["prompt_2"][0] == fit_to_tokenizer(TEXT, target.pipeline.tokenizer_2)
    assert len(prompts["prompt_2"][0].split()) < len(prompts["prompt"][0].split()) < len(TEXT.split())
    assert type(target.pipeline).__name__ == "StableDiffusionXLPipeline"


def test_a_folder_that_is_no_pipeline_is_a_clear_error(tmp_path):
    with pytest.raises(DecoderLoadError, match="diffusers text-to-image pipeline"):
        PipelineTarget.from_pretrained(str(tmp_path))


def test_reconstruct_cli_draws_with_the_pipeline(sdxl_dir, tmp_path, capsys):
    import json

    from dediffusion.cli import main
    from dediffusion.data.images import to_pil
    from dediffusion.world import render_batch, test_scenes

    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    for i, image in enumerate(to_pil(render_batch(test_scenes(2), 32))):
        image.save(images / f"scene{i}.png")
    argv = ["reconstruct", str(images), "--encoder", "bundled:world_encoder", "--pipeline", str(sdxl_dir)]
    assert main([*argv, "--num-inference-steps", "2", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[1] for line in lines)
    rows = [json.loads(line) for line in (out / "reconstructions.jsonl").read_text().splitlines()]
    drawn = [row for row in rows if row["decoder"] == str(sdxl_dir)]
    assert len(rows) == 4 and len(drawn) == 2 and all(Path(row["output"]).is_file() for row in rows)
    assert all(len(set(row["text"].split())) == len(row["text"].split()) for row in drawn)  # unique words
