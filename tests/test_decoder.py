import json

import pytest
import torch
import torch.nn.functional as F
from conftest import VARIANT_IDS, VARIANTS, micro

from dediffusion.models.decoder import DecoderLoadError, TextToImageDecoder, sample_timesteps
from dediffusion.models.dediffusion import sample_generators


@pytest.fixture(scope="module")
def decoder():
    return micro()


@pytest.mark.parametrize("texts", [["red green blue yellow"], ["red", "dark light", ""]])
def test_one_hot_rows_through_the_soft_path_equal_the_text_encoder(decoder, texts):
    ids, _ = decoder.tokenize(texts)
    for row, text in zip(ids, texts):
        n = len(text.split())
        probs = F.one_hot(row[1 : 1 + n], decoder.vocab_size).float()[None]
        soft = decoder.soft_text_embeddings(probs)
        reference = decoder.text_encoder(row[None])[0]
        assert torch.allclose(soft, reference, atol=1e-5)


def test_soft_path_matches_when_padding_is_the_end_token():
    """Stable Diffusion 1.x pads with the end token; the layout must still match the tokenizer."""
    decoder = micro()
    decoder.tokenizer.pad_token = decoder.tokenizer.eos_token
    ids, _ = decoder.tokenize(["blue red"])
    probs = F.one_hot(ids[:, 1:3], decoder.vocab_size).float()
    assert torch.allclose(decoder.soft_text_embeddings(probs), decoder.text_encoder(ids)[0], atol=1e-5)


def test_soft_path_is_differentiable_in_the_probabilities(decoder):
    probs = torch.softmax(torch.randn(2, 3, decoder.vocab_size), -1).requires_grad_()
    decoder.soft_text_embeddings(probs).square().sum().backward()
    assert probs.grad is not None and probs.grad.abs().sum() > 0
    assert all(p.grad is None for p in decoder.parameters())


def test_too_many_tokens_for_the_text_encoder_is_refused(decoder):
    with pytest.raises(ValueError, match="exceeds the decoder's limit"):
        decoder.template_ids(decoder.max_tokens + 1)


def test_vocabulary_mask_excludes_specials_and_punctuation_and_honours_allow_deny(decoder):
    strings = decoder.token_strings()
    mask = decoder.vocabulary_mask()
    for special in decoder.tokenizer.all_special_ids:
        assert not mask[special]
    assert mask[strings.index("red")]
    allowed = decoder.vocabulary_mask(allow=["red", "blue"])
    assert {strings[i] for i in allowed.nonzero().flatten().tolist()} == {"red", "blue"}
    denied = decoder.vocabulary_mask(deny=["red"])
    assert not denied[strings.index("red")] and denied.sum() == mask.sum() - 1
    with pytest.raises(ValueError, match="not in the decoder vocabulary"):
        decoder.vocabulary_mask(allow=["purple"])


def test_punctuation_tokens_are_excluded_only_when_asked():
    from dediffusion.models.micro import build_micro_decoder

    decoder = build_micro_decoder(["red", "!", "..."], resolution=8, latent=False, max_length=8)
    strings = decoder.token_strings()
    bang = strings.index("!")
    assert not decoder.vocabulary_mask()[bang]
    assert decoder.vocabulary_mask(exclude_punctuation=False)[bang]


@pytest.mark.parametrize("latent, prediction_type", VARIANTS, ids=VARIANT_IDS)
def test_denoising_loss_uses_the_decoders_own_objective(latent, prediction_type):
    decoder = micro(latent, prediction_type)
    images = torch.rand(2, 3, decoder.resolution, decoder.resolution) * 2 - 1
    states = decoder.encode_text(["red", "blue"])
    timesteps, noise = torch.tensor([10, 900]), torch.randn(2, *decoder.latent_shape)
    loss = decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise)
    latents = decoder.to_latents(images)
    noisy = decoder.scheduler.add_noise(latents, noise, timesteps)
    prediction = decoder.unet(noisy, timesteps, encoder_hidden_states=states).sample
    alpha = decoder.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    target = noise if prediction_type == "epsilon" else alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
    assert torch.allclose(loss, (prediction - target).pow(2).mean(dim=(1, 2, 3)), atol=1e-6)


def test_loss_weights_make_a_weighted_mean_over_the_pixels_they_cover():
    decoder = micro()  # pixel space: one latent cell per pixel
    size = decoder.resolution
    images = torch.rand(2, 3, size, size) * 2 - 1
    states = decoder.encode_text(["red", "blue"])
    timesteps, noise = torch.tensor([10, 900]), torch.randn(2, *decoder.latent_shape)
    plain = decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise)
    threes = torch.full((2, 1, size, size), 3.0)
    uniform = decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise, weights=threes)
    assert torch.allclose(uniform, plain, atol=1e-6)
    right_half = torch.zeros(2, 1, size, size)
    right_half[..., size // 2 :] = 1.0
    weighted = decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise, weights=right_half)
    prediction = decoder.unet(decoder.scheduler.add_noise(images, noise, timesteps), timesteps, states).sample
    error = (prediction - decoder._target(images, noise, timesteps)).pow(2)
    assert torch.allclose(weighted, error[..., size // 2 :].mean(dim=(1, 2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="weights must be"):
        decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise, weights=-right_half)


def test_loss_weights_reach_a_latent_cell_from_any_pixel_it_covers():
    decoder = micro(latent=True)
    size, cells = decoder.resolution, decoder.latent_shape[-1]
    images, states = torch.rand(1, 3, size, size) * 2 - 1, decoder.encode_text(["red"])
    timesteps, noise = torch.tensor([500]), torch.randn(1, *decoder.latent_shape)
    one_pixel = torch.zeros(1, 1, size, size)
    one_pixel[0, 0, 0, 0] = 1.0  # inside the first latent cell only
    weighted = decoder.denoising_loss(images, states, timesteps=timesteps, noise=noise, weights=one_pixel)
    latents = decoder.to_latents(images)
    prediction = decoder.unet(decoder.scheduler.add_noise(latents, noise, timesteps), timesteps, states).sample
    error = (prediction - decoder._target(latents, noise, timesteps)).pow(2).mean(dim=1)
    assert cells < size and torch.allclose(weighted, error[:, 0, 0], atol=1e-6)


def test_random_draws_are_per_sample_and_reproducible(decoder):
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    states = decoder.encode_text(["red", "blue", "green"])
    full = decoder.denoising_loss(images, states, sample_generators([5, 6, 7], "cpu"))
    again = decoder.denoising_loss(images, states, sample_generators([5, 6, 7], "cpu"))
    alone = decoder.denoising_loss(images[1:2], states[1:2], sample_generators([6], "cpu"))
    assert torch.equal(full, again) and torch.allclose(full[1:2], alone, atol=1e-6)


def test_fixed_noise_loss_gives_every_text_the_same_noise_per_timestep(decoder):
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    states = decoder.encode_text(["red", "blue"])
    losses = decoder.fixed_noise_loss(images, states, [100, 700])
    assert losses.shape == (2, 2) and not losses.requires_grad
    noise = torch.randn((2, *decoder.latent_shape), generator=torch.Generator().manual_seed(700))
    direct = decoder.denoising_loss(images, states, None, torch.tensor([700, 700]), noise)
    assert torch.allclose(losses[1], direct)
    swapped = decoder.fixed_noise_loss(images, states.flip(0), [100, 700])
    assert not torch.allclose(swapped, losses)  # only the text changed, and the loss saw it
    assert torch.equal(decoder.fixed_noise_loss(images, states, [100, 700]), losses)


@pytest.mark.parametrize("bias", [0.0, 1.0, 3.0])
def test_timestep_bias_gives_density_proportional_to_t_to_the_bias(bias):
    steps = sample_timesteps(sample_generators(range(4000), "cpu"), 1000, bias).float()
    assert steps.min() >= 0 and steps.max() <= 999
    # density ~ t^b on [0, T): mean = T (b + 1) / (b + 2), median = T 0.5^(1 / (b + 1))
    assert steps.mean().item() == pytest.approx(1000 * (bias + 1) / (bias + 2), abs=15)
    assert steps.median().item() == pytest.approx(1000 * 0.5 ** (1 / (bias + 1)), abs=20)


def test_timestep_bias_is_per_sample_and_rejects_negative_values():
    both = sample_timesteps(sample_generators([3, 4], "cpu"), 1000, 3.0)
    alone = sample_timesteps(sample_generators([4], "cpu"), 1000, 3.0)
    assert both[1] == alone[0]
    with pytest.raises(ValueError, match="timestep_bias"):
        sample_timesteps(sample_generators([0], "cpu"), 1000, -1.0)


def test_generate_is_seeded_and_in_range(decoder):
    def run(seed):
        return decoder.generate(
            ["red", "blue"],
            guidance_scale=3.0,
            num_inference_steps=4,
            generators=sample_generators([seed, seed + 1], "cpu"),
        )

    first, second, other = run(0), run(0), run(9)
    assert first.shape == (2, 3, 8, 8) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, second) and not torch.equal(first, other)


def test_generate_follows_the_scheduler_config_unless_told_to_start_at_the_last_timestep(decoder):
    seen = []
    hook = decoder.unet.register_forward_pre_hook(lambda module, args: seen.append(int(args[1])))
    try:
        decoder.generate(["red"], guidance_scale=1.0, num_inference_steps=4)
        default, seen[:] = list(seen), []
        decoder.generate(["red"], guidance_scale=1.0, num_inference_steps=4, timestep_spacing="trailing")
    finally:
        hook.remove()
    last = decoder.scheduler.config.num_train_timesteps - 1
    assert decoder.scheduler.config.timestep_spacing == "leading"
    assert default[0] < last - 100  # leading: a quarter of T below the pure-noise end
    assert seen[0] == last and len(seen) == 4 and seen == sorted(seen, reverse=True)


def test_save_and_load_round_trip_with_diffusers_own_loaders(tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    decoder = micro(latent=True)
    decoder.save_pretrained(tmp_path / "d")
    loaded = TextToImageDecoder.from_pretrained(tmp_path / "d")
    assert loaded.fingerprint() == decoder.fingerprint() and loaded.vae is not None
    states = decoder.encode_text(["red green"])
    assert torch.allclose(loaded.encode_text(["red green"]), states)
    pipeline = StableDiffusionPipeline.from_pretrained(tmp_path / "d", safety_checker=None)
    assert pipeline.unet.config.sample_size == 8
    assert UNet2DConditionModel.from_pretrained(tmp_path / "d", subfolder="unet").config.in_channels == 4
    assert json.loads((tmp_path / "d" / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_a_lazy_decoder_loads_each_part_on_first_use_as_the_decoder_was_cast(tmp_path):
    decoder = micro(latent=True)
    decoder.save_pretrained(tmp_path / "d")
    lazy = TextToImageDecoder.from_pretrained(tmp_path / "d", lazy=True).to(torch.float64)
    assert {"unet", "vae", "text_encoder", "scheduler"} <= set(lazy._lazy) and not list(lazy.parameters())
    # facts about the text come from the tokenizer and the text encoder's config.json, without loading it
    assert (lazy.fingerprint(), lazy.vocab_size, lazy.max_tokens) == (
        decoder.fingerprint(),
        decoder.vocab_size,
        decoder.max_tokens,
    )
    assert "text_encoder" in lazy._lazy
    states = lazy.encode_text(["red green"])  # loads the text encoder, in float64 as asked before
    assert states.dtype == torch.float64
    assert torch.allclose(states.float(), decoder.encode_text(["red green"]), atol=1e-4)
    assert lazy.unet.dtype == torch.float64 and not lazy.unet.training
    assert not any(p.requires_grad for p in lazy.parameters()) and lazy._lazy.keys() <= {"vae", "scheduler"}


def test_encoding_with_a_lazy_decoder_imports_no_diffusers_model(tmp_path):
    import subprocess
    import sys

    from conftest import tiny_config

    from dediffusion.models.dediffusion import DeDiffusion

    micro(latent=True).save_pretrained(tmp_path / "d")
    DeDiffusion(tiny_config(str(tmp_path / "d")), TextToImageDecoder.from_pretrained(tmp_path / "d")).save_pretrained(
        tmp_path / "m"
    )
    code = (
        "import sys, torch; from dediffusion import DeDiffusion; "
        f"m = DeDiffusion.from_pretrained({str(tmp_path / 'm')!r}); "
        "print(m.encode(torch.zeros(2, 3, m.config.encoder.image_size, m.config.encoder.image_size))); "
        "print(sorted(n for n in sys.modules if n.startswith('diffusers.models')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("[") and len(eval(out[0])) == 2 and out[1] == "[]"


def test_loading_a_folder_that_is_not_a_pipeline_names_it(tmp_path):
    with pytest.raises(DecoderLoadError, match="not-a-pipeline"):
        TextToImageDecoder.from_pretrained(tmp_path / "not-a-pipeline")


def test_decoder_stays_frozen_and_in_eval_mode(decoder):
    decoder.train()
    assert not decoder.training and not decoder.unet.training
    assert not any(p.requires_grad for p in decoder.parameters())


def test_denoise_latents_from_a_nearly_clean_start_keeps_the_latents(decoder):
    from diffusers import DDIMScheduler

    from dediffusion.models.sampling import denoise_latents

    scheduler = DDIMScheduler.from_config(decoder.scheduler.config, timestep_spacing="trailing")
    scheduler.set_timesteps(10)  # 999, 899, ..., 99
    latents = torch.randn((2, *decoder.latent_shape), generator=torch.Generator().manual_seed(0))
    states = decoder.encode_text(["red", ""])
    kept = denoise_latents(decoder, latents, states, scheduler, [1], guidance_scale=3.0)  # one step from t=1 to 0
    redrawn = denoise_latents(decoder, latents, states, scheduler, scheduler.timesteps, guidance_scale=3.0)
    assert kept.shape == latents.shape
    assert (kept - latents).abs().max() < 0.05 < (redrawn - latents).abs().max()
