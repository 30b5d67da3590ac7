"""Decoder A: pretraining writes a diffusers folder that loads both ways; evaluation gives a score."""

import json

import pytest
import torch

from dediffusion.cli import main
from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.world.decoders import (
    default_decoder_path,
    evaluate_decoder,
    object_mask,
    pretrain_decoder_a,
    shape_latent_loss,
    world_sampler,
)
from dediffusion.world.render import render_batch
from dediffusion.world.split import test_scenes, train_scenes

TINY = {
    "max_length": 32,
    "text_width": 16,
    "text_layers": 1,
    "unet_channels": (8, 16),
    "cross_attention": (False, True),
    "vae_channels": (8, 8),
    "attention_head_dim": 4,
}


@pytest.fixture(scope="module")
def tiny_decoder_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("decoders") / "decoder_a"
    return pretrain_decoder_a(
        out, vae_steps=2, text_steps=2, steps=2, batch_size=4, object_weight=2.0, vae_shape_weight=0.1,
        vae_shape_margin=0.2, config=TINY, command="test",
    )  # fmt: skip


def test_world_sampler_draws_training_scenes_with_captions():
    images, captions = world_sampler(seed=3)(4, 2)
    assert images.shape == (4, 3, 32, 32) and -1 <= images.min() and images.max() <= 1
    assert len(captions) == 4 and all(isinstance(c, str) for c in captions)
    # step 2 of batch 4 is scenes 8..11 of the training stream (never the test split)
    expected = render_batch(train_scenes(4, seed=3, start=8))
    assert torch.equal(images, expected)
    assert not set(map(repr, train_scenes(50, seed=3))) & set(map(repr, test_scenes(50)))


def test_object_weights_cover_every_object_pixel_and_nothing_else():
    from dediffusion.world.scene import BACKGROUNDS

    images, captions, weights = world_sampler(seed=3, object_weight=4.0)(8, 1)
    plain_images, plain_captions = world_sampler(seed=3)(8, 1)
    assert torch.equal(images, plain_images) and captions == plain_captions
    assert weights.shape == (8, 1, 32, 32) and set(weights.unique().tolist()) == {1.0, 5.0}
    scenes = train_scenes(8, seed=3, start=8)
    assert torch.equal(weights, 1.0 + 4.0 * object_mask(scenes))
    for image, weight, scene in zip(images, weights, scenes):
        # every pixel that differs from the (shaded) background colour lies under the mask
        background = torch.tensor(BACKGROUNDS[scene.background], dtype=torch.float32) / 127.5 - 1
        differs = (image - background[:, None, None]).abs().amax(dim=0) > 0.15
        assert differs.any() and (weight[0][differs] == 5.0).all()
        assert (weight[0] == 5.0).float().mean() < 0.5


def test_shape_latent_loss_is_met_only_by_latents_that_hold_each_cells_shape():
    loss = shape_latent_loss(seed=3, batch_size=8, weight=1.0)
    means = torch.randn(8, 8, 8, 8, requires_grad=True)
    at_start = loss(means, 0).item()
    optimizer = torch.optim.Adam([means], lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        loss(means, 0).backward()
        optimizer.step()
    # latents arranged for step 0's scenes meet it; the same latents are wrong for step 1's scenes
    assert loss(means, 0).item() < 0.1 < 1.0 < at_start
    assert loss(means, 1).item() > 1.0
    assert loss(means.detach() * 10, 0).item() == pytest.approx(loss(means.detach(), 0).item(), rel=1e-4)


def test_shape_latent_margin_stops_pushing_once_shapes_are_that_far_apart():
    loss = shape_latent_loss(seed=3, batch_size=8, weight=1.0, margin=1.0)
    means = torch.randn(8, 8, 8, 8, requires_grad=True)
    start = means.detach().clone()
    optimizer = torch.optim.Adam([means], lr=0.05)
    for _ in range(500):
        optimizer.zero_grad()
        value = loss(means, 0)
        if value.item() == 0.0:
            break
        value.backward()
        optimizer.step()
    assert loss(means, 0).item() == 0.0 < loss(means, 1).item()
    # met: no gradient left, unlike the cross-entropy, which keeps pulling shapes apart
    means.grad = None
    loss(means, 0).backward()
    assert means.grad.abs().max().item() == 0.0
    cross_entropy = shape_latent_loss(seed=3, batch_size=8, weight=1.0)(means, 0)
    assert torch.autograd.grad(cross_entropy, means)[0].abs().max().item() > 0.0
    assert (means.detach() - start).norm() > 0


def test_pretrain_writes_loadable_folder_with_record(tiny_decoder_dir):
    record = json.loads((tiny_decoder_dir / "training.json").read_text())
    assert record["settings"]["steps"] == 2 and record["command"] == "test" and record["wall_time_s"] > 0
    assert record["settings"]["object_weight"] == 2.0 and record["settings"]["vae_shape_weight"] == 0.1
    assert record["settings"]["vae_shape_margin"] == 0.2
    assert not list(tiny_decoder_dir.parent.glob(".decoder_a.tmp-*"))
    decoder = TextToImageDecoder.from_pretrained(tiny_decoder_dir)
    assert decoder.resolution == 32 and decoder.prediction_type == "v_prediction"
    images = decoder.generate(["a red circle"], guidance_scale=2.0, num_inference_steps=2)
    assert images.shape == (1, 3, 32, 32)


def test_folder_loads_as_stable_diffusion_pipeline(tiny_decoder_dir):
    from diffusers import StableDiffusionPipeline

    # weights are stored in float16 (bundle size); ask diffusers for float32 on the CPU
    pipe = StableDiffusionPipeline.from_pretrained(tiny_decoder_dir, safety_checker=None, dtype=torch.float32)
    out = pipe("a large blue square", height=32, width=32, num_inference_steps=2, output_type="pt")
    assert out.images.shape == (1, 3, 32, 32)


def test_evaluate_decoder_returns_accuracy(tiny_decoder_dir):
    score = evaluate_decoder(tiny_decoder_dir, "description", n=4, num_inference_steps=2)
    assert 0.0 <= score <= 1.0
    with pytest.raises(ValueError, match="prompts_from"):
        evaluate_decoder(tiny_decoder_dir, "nonsense", n=2, num_inference_steps=1)


def test_interrupted_pretraining_continues_to_the_same_weights(tmp_path, monkeypatch):
    import dediffusion.train.pretrain as pretrain
    from dediffusion.world.decoders import checkpoint_folder

    settings = dict(vae_steps=2, text_steps=2, steps=4, batch_size=4, config=TINY, checkpoint_every=2)
    straight = TextToImageDecoder.from_pretrained(pretrain_decoder_a(tmp_path / "straight", **settings))
    assert not checkpoint_folder(tmp_path / "straight").exists()

    calls, real = [], pretrain.sample_generators

    def killed_at_the_fourth_unet_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after the checkpoint of step 2; step 3's work is lost
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "sample_generators", killed_at_the_fourth_unet_step)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        pretrain_decoder_a(out, **settings)
    monkeypatch.setattr(pretrain, "sample_generators", real)
    assert not out.exists()
    assert sorted(p.name for p in checkpoint_folder(out).iterdir()) == ["text.pt", "unet.pt", "vae.pt"]
    with pytest.raises(ValueError, match=r"other settings.*resumed\.checkpoints"):
        pretrain_decoder_a(out, **{**settings, "steps": 5})

    resumed = TextToImageDecoder.from_pretrained(pretrain_decoder_a(out, **settings))
    assert not checkpoint_folder(out).exists()
    for part in ("unet", "text_encoder", "vae"):
        a, b = getattr(straight, part).state_dict(), getattr(resumed, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert resumed.vae.config.scaling_factor == straight.vae.config.scaling_factor
    record = json.loads((out / "training.json").read_text())
    assert record["settings"]["steps"] == 4 and record["wall_time_s"] > 0


def test_bundled_decoder_loads():
    folder = default_decoder_path()
    decoder = TextToImageDecoder.from_pretrained(folder)
    assert decoder.resolution == 32 and decoder.vae is not None
    assert json.loads((folder / "training.json").read_text())["wall_time_s"] > 0


def test_vae_loss_must_be_known():
    from dediffusion.models.micro import build_micro_decoder
    from dediffusion.train.pretrain import pretrain_vae

    decoder = build_micro_decoder(["red"], resolution=8, latent=True, unet_channels=(8, 16), vae_channels=(8, 8))
    with pytest.raises(ValueError, match="loss"):
        pretrain_vae(decoder, world_sampler(), 1, 2, loss="huber")


def test_vae_gradients_are_clipped_to_max_grad_norm():
    from dediffusion.models.micro import build_micro_decoder
    from dediffusion.train.pretrain import pretrain_vae

    def trained(max_grad_norm):
        torch.manual_seed(0)
        decoder = build_micro_decoder(["red"], resolution=8, latent=True, unet_channels=(8, 16), vae_channels=(8, 8))
        before = [p.detach().clone() for p in decoder.vae.parameters()]
        pretrain_vae(decoder, world_sampler(resolution=8), 2, 2, loss="mse", max_grad_norm=max_grad_norm)
        return max((p - b).abs().max().item() for p, b in zip(decoder.vae.parameters(), before))

    assert trained(None) > 0 and trained(1.0) > 0
    assert trained(0.0) == 0  # gradients clipped to norm 0: Adam takes no step


def test_cli_pretrains_decoder_a_and_records_the_command(tmp_path, caplog):
    steps = ["--steps", "1", "--vae-steps", "1", "--text-steps", "1", "--p-loose", "0.25"]
    args = ["world", "pretrain-decoder", "a", "--out", str(tmp_path / "a"), *steps]
    assert main(args) == 0
    record = json.loads((tmp_path / "a" / "training.json").read_text())
    assert record["command"] == "dediffusion " + " ".join(args)
    assert record["settings"]["steps"] == record["settings"]["vae_steps"] == record["settings"]["text_steps"] == 1
    assert record["settings"]["p_loose"] == 0.25
    assert TextToImageDecoder.from_pretrained(tmp_path / "a").vae is not None
    assert main(["world", "pretrain-decoder", "b", "-o", str(tmp_path / "b"), "--vae-steps", "3"]) == 2
    assert "drop --vae-steps" in caplog.text and not (tmp_path / "b").exists()
