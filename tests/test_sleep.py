"""The sleep phase (models/sleep.py, train/drawn.py): prior texts, the decoder's drawings of them,
the matched cross-entropy, and a training run that sleeps before it wakes."""

import json
import shutil

import pytest
import torch
from conftest import micro, tiny_config
from safetensors.torch import load_file

from dediffusion.config import ConfigError
from dediffusion.models.dediffusion import DeDiffusion
from dediffusion.models.sleep import draw_images, match_targets, matched_cross_entropy, sample_prior_tokens
from dediffusion.train.loop import train

SLEEP = ["tokens.init_text=red", "sleep.steps=4", "sleep.pairs=12", "sleep.batch_size=4", "sleep.num_inference_steps=2"]


def test_prior_texts_hold_allowed_words_at_most_at_the_density_and_filler_elsewhere():
    allowed = torch.tensor([5, 6, 7, 9])
    tokens = sample_prior_tokens(2000, 10, allowed, 4, 0.3, torch.Generator().manual_seed(0))
    words = tokens != 4
    assert tokens.shape == (2000, 10) and torch.isin(tokens[words], allowed).all()
    # density ~ U(0, 0.3): on average 15% of the positions, each allowed word equally often
    assert abs(words.float().mean().item() - 0.15) < 0.01
    counts = torch.stack([(tokens == w).sum() for w in allowed]).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    again = sample_prior_tokens(2000, 10, allowed, 4, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(tokens, again)


def test_matching_recovers_the_arrangement_the_encoder_predicts():
    targets = torch.tensor([[3, 1, 2, 0], [0, 0, 2, 2]])
    arranged = torch.tensor([[0, 1, 2, 3], [2, 0, 2, 0]])  # what each position predicts sharply
    log_probs = torch.log_softmax(torch.nn.functional.one_hot(arranged, 4).float() * 8, -1)
    matched = match_targets(log_probs, targets)
    assert torch.equal(matched, arranged)
    assert torch.equal(matched.sort(1).values, targets.sort(1).values)  # a permutation of the targets


def test_matched_cross_entropy_ignores_the_targets_order_and_never_exceeds_the_plain_one():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(5, 6, 9, generator=generator), -1)
    targets = torch.randint(9, (5, 6), generator=generator)
    shuffled = targets[:, torch.randperm(6, generator=generator)]
    loss = matched_cross_entropy(log_probs, targets)
    assert torch.allclose(loss, matched_cross_entropy(log_probs, shuffled))
    plain = -log_probs.gather(2, targets[..., None]).squeeze(-1).mean(1)
    assert (loss <= plain + 1e-6).all() and (loss < plain).any()


def test_each_drawing_depends_only_on_its_text_and_seed():
    decoder = micro(latent=True)
    tokens = torch.tensor([[4, 5, 6], [7, 8, 9], [4, 4, 4]])
    together = draw_images(decoder, tokens, [10, 11, 12], 2.0, 3)
    alone = draw_images(decoder, tokens[1:2], [11], 2.0, 3)
    assert together.shape == (3, 3, decoder.resolution, decoder.resolution)
    assert torch.allclose(together[1:2], alone, atol=1e-5)
    assert not torch.allclose(together[0], draw_images(decoder, tokens[:1], [99], 2.0, 3)[0])


def test_bfloat16_drawings_round_the_float32_ones_and_come_back_as_float32():
    decoder = micro(latent=True)
    tokens = torch.tensor([[4, 5, 6], [7, 8, 9]])
    exact = draw_images(decoder, tokens, [1, 2], 2.0, 3)
    rounded = draw_images(decoder, tokens, [1, 2], 2.0, 3, torch.bfloat16)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    assert (rounded - exact).abs().mean() < 0.02 and next(decoder.unet.parameters()).dtype == torch.float32


def test_the_sleep_loss_is_the_matched_cross_entropy_and_trains_the_encoder_alone():
    decoder = micro()
    model = DeDiffusion(tiny_config(), decoder)
    images = torch.rand(3, 3, decoder.resolution, decoder.resolution) * 2 - 1
    texts = torch.tensor([[4, 5, 6, 7], [4, 4, 4, 4], [9, 8, 7, 6]])
    out = model(images, torch.arange(3), token_ids=texts)
    expected = matched_cross_entropy(torch.log_softmax(model.logits(images), -1), texts)
    assert torch.allclose(out["loss_per_sample"], expected) and "denoising_loss" not in out
    out["loss"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)
    assert all(p.grad is None for p in decoder.parameters())


def run(decoder_dir, data, folder, *overrides, resume=None):
    config = tiny_config(str(decoder_dir), str(data), "train.steps=2", *SLEEP, *overrides)
    return train(config, folder, resume=resume)


def test_a_run_sleeps_on_drawn_pairs_then_wakes(micro_decoder_dir, quadrant_folder, tmp_path):
    final = run(micro_decoder_dir, quadrant_folder, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["sleep"] * 4 + ["wake"] * 2
    assert "denoising_loss" not in records[0] and "denoising_loss" in records[-1]
    parts = sorted((tmp_path / "run" / "sleep").glob("part-*"))
    assert len(parts) == 1 and load_file(parts[0])["images"].shape == (12, 3, 8, 8)
    slept = DeDiffusion.from_pretrained(tmp_path / "run" / "sleep" / "encoder")  # the encoder after step 4
    after_sleep = load_file(tmp_path / "run" / "checkpoints" / "step-00000004" / "model.safetensors")
    assert all(torch.equal(v, after_sleep[k]) for k, v in slept.encoder.state_dict().items())
    assert json.loads((final / "training.json").read_text())["sleep_steps"] == 4


def test_a_run_resumed_mid_sleep_equals_an_uninterrupted_one(micro_decoder_dir, quadrant_folder, tmp_path):
    keep = "train.keep_checkpoints=3"
    run(micro_decoder_dir, quadrant_folder, tmp_path / "straight", keep)
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "straight", interrupted)
    for name in ("final", "checkpoints/step-00000004", "checkpoints/step-00000006", "sleep"):
        shutil.rmtree(interrupted / name)  # as if killed after step 2, before its drawings were kept
    run(micro_decoder_dir, quadrant_folder, interrupted, keep, resume="latest")
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    resumed = load_file(interrupted / "final" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_a_run_draws_with_its_sleep_spacing_and_precision(micro_decoder_dir, tmp_path):
    from types import SimpleNamespace

    from dediffusion.data.images import to_pixels
    from dediffusion.models.decoder import TextToImageDecoder
    from dediffusion.train.drawn import load_drawn_pairs

    drawing = ["sleep.timestep_spacing=trailing", "sleep.draw_dtype=bfloat16"]
    config = tiny_config(str(micro_decoder_dir), "", *SLEEP, *drawing)
    model = DeDiffusion(config, TextToImageDecoder.from_pretrained(micro_decoder_dir))
    one_process = SimpleNamespace(num_processes=1, process_index=0, wait_for_everyone=lambda: None)
    images, tokens = load_drawn_pairs(model, config, tmp_path, one_process)
    seeds = [config.train.seed * 1_000_003 + i for i in range(len(tokens))]
    drawn = {spacing: to_pixels(draw_images(model.decoder, tokens, seeds, 3.0, 2, torch.bfloat16, spacing))
             for spacing in ("trailing", None)}  # fmt: skip
    assert torch.equal(images, drawn["trailing"]) and not torch.equal(images, drawn[None])


def test_sleeping_without_a_filler_token_is_a_clear_error(micro_decoder_dir, quadrant_folder, tmp_path):
    with pytest.raises(ConfigError, match="tokens.init_text"):
        run(micro_decoder_dir, quadrant_folder, tmp_path / "run", "tokens.init_text=")


def text_prior_model(micro_decoder_dir, *overrides):
    from dediffusion.models.decoder import TextToImageDecoder

    config = tiny_config(str(micro_decoder_dir), "", *SLEEP, *overrides)
    return DeDiffusion(config, TextToImageDecoder.from_pretrained(micro_decoder_dir)), config


def test_text_prior_keeps_each_lines_order_and_ends_it(micro_decoder_dir, tmp_path):
    from dediffusion.train.drawn import prior_token_ids

    texts = tmp_path / "texts.txt"
    texts.write_text("red green\n\nblue dark light yellow red\n")
    model, config = text_prior_model(micro_decoder_dir, f"sleep.texts={texts}", "tokens.allow_end=true")
    ids = prior_token_ids(model, config)  # 12 texts of 4 tokens, both lines 6 times
    end, read = model.decoder.end_id, model.decoder.text_token_ids
    rows = {tuple(row.tolist()) for row in ids}
    assert rows == {(*read("red green"), end, end), tuple(read("blue dark light yellow"))}
    assert model.texts_of(ids[:1])[0] in ("red green", "blue dark light yellow")
    assert sorted(model.texts_of(ids)).count("red green") == 6
    filled = prior_token_ids(*text_prior_model(micro_decoder_dir, f"sleep.texts={texts}"))  # no end: the filler
    assert (*read("red green"), *read("red red")) in {tuple(row.tolist()) for row in filled}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot be read"), ("\n \n", "holds no text"), ("red purple\n", "may not write")],
)
def test_a_bad_text_prior_file_is_a_clear_error(micro_decoder_dir, tmp_path, content, message):
    from dediffusion.train.drawn import prior_token_ids

    texts = tmp_path / "texts.txt"
    if content is not None:
        texts.write_text(content)
    with pytest.raises(ConfigError, match=message):
        prior_token_ids(*text_prior_model(micro_decoder_dir, f"sleep.texts={texts}", "tokens.allow_end=true"))


def test_sleeping_on_texts_is_a_position_by_position_cross_entropy(micro_decoder_dir, tmp_path):
    model, _ = text_prior_model(micro_decoder_dir, f"sleep.texts={tmp_path / 'texts.txt'}")
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    texts = torch.tensor([[4, 5, 6, 7], [7, 6, 5, 4]])
    log_probs = torch.log_softmax(model.logits(images), -1)
    plain = -log_probs.gather(2, texts[..., None]).squeeze(-1).mean(1)
    out = model(images, torch.arange(2), token_ids=texts)
    assert torch.allclose(out["loss_per_sample"], plain)
    assert not torch.allclose(plain, matched_cross_entropy(log_probs, texts))  # the order counts
