import json
from pathlib import Path

import pytest
import torch
from conftest import VARIANT_IDS, VARIANTS, micro, tiny_config

from dediffusion.models.decoder import TextToImageDecoder
from dediffusion.models.dediffusion import CheckpointMismatchError, DeDiffusion, unique_words_of
from dediffusion.models.micro import build_micro_decoder


def train_a_few_steps(model, steps=3):
    optimizer = torch.optim.AdamW([p for p in model.encoder.parameters() if p.requires_grad], lr=1e-2)
    images = torch.rand(4, 3, model.decoder.resolution, model.decoder.resolution) * 2 - 1
    for step in range(steps):
        optimizer.zero_grad()
        model(images, torch.arange(4) + 10 * step, step)["loss"].backward()
        if step < steps - 1:
            optimizer.step()


@pytest.mark.parametrize("estimator", ["gumbel", "search"])
@pytest.mark.parametrize("latent, prediction_type", VARIANTS, ids=VARIANT_IDS)
def test_gradients_reach_every_encoder_parameter_and_never_the_decoder(latent, prediction_type, estimator):
    decoder = micro(latent, prediction_type)
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    model = DeDiffusion(tiny_config("", "", f"train.estimator={estimator}"), decoder)
    train_a_few_steps(model)
    after = decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in decoder.parameters())
    trainable = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable), [
        n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0
    ]


def test_forward_reports_loss_and_temperature_schedule():
    model = DeDiffusion(tiny_config("", "", "train.steps=10"), micro())
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    first, last = model(images, torch.tensor([1, 2]), 0), model(images, torch.tensor([1, 2]), 10)
    assert first["loss"].ndim == 0 and first["loss_per_sample"].shape == (2,)
    assert float(first["temperature"]) == pytest.approx(2.0) and float(last["temperature"]) == pytest.approx(0.3)


@pytest.mark.parametrize("proposal, accept", [("random", "best"), ("gradient", "improving")])
def test_search_training_loss_is_the_cross_entropy_toward_the_searched_text(proposal, accept):
    from dediffusion.models.dediffusion import sample_generators
    from dediffusion.models.quantize import hard_tokens
    from dediffusion.models.search import search_tokens

    sets = ["train.estimator=search", f"train.search_proposal={proposal}", f"train.search_accept={accept}"]
    model = DeDiffusion(tiny_config("", "", *sets, "tokens.deny=[dark]"), micro())
    images, seeds = torch.rand(2, 3, 8, 8) * 2 - 1, torch.tensor([5, 6])
    out = model(images, seeds, 0)
    logits = model.logits(images)
    allowed = model.vocab_mask.nonzero().squeeze(1)
    generators = sample_generators(seeds, "cpu")
    targets, searched, current = search_tokens(
        model.decoder, images, hard_tokens(logits), allowed, generators, proposal=proposal, accept=accept
    )
    log_probs = torch.log_softmax(logits, -1)
    expected = [-log_probs[b, searched[b]].gather(-1, targets[b, searched[b], None]).mean() for b in range(2)]
    assert torch.allclose(out["loss_per_sample"], torch.stack(expected), atol=1e-6)
    assert torch.allclose(out["denoising_loss"], current.mean())


def test_timestep_bias_moves_the_training_noise_levels_up(monkeypatch):
    import dediffusion.models.decoder as decoder_module

    drawn = []
    original = decoder_module.sample_timesteps
    monkeypatch.setattr(decoder_module, "sample_timesteps", lambda *a: drawn.append(original(*a)) or drawn[-1])
    images = torch.rand(64, 3, 8, 8) * 2 - 1
    for bias in ("0", "3"):
        DeDiffusion(tiny_config("", "", f"train.timestep_bias={bias}"), micro())(images, torch.arange(64))
    uniform, biased = (t.float().mean().item() for t in drawn)
    assert uniform == pytest.approx(500, abs=80) and biased == pytest.approx(800, abs=50)


def test_encode_writes_only_allowed_words():
    model = DeDiffusion(tiny_config("", "", "tokens.deny=[dark,light]"), micro()).eval()
    texts = model.encode(torch.rand(3, 3, 8, 8) * 2 - 1)
    assert len(texts) == 3
    assert all(len(t.split()) == 4 and set(t.split()) <= {"red", "green", "blue", "yellow"} for t in texts)


def test_unique_words_keeps_each_word_once_in_first_order_and_drops_the_filler():
    text = "left a a red left a red blue red"
    assert unique_words_of(text, ["a"]) == "left red blue"
    assert unique_words_of(text) == "left a red blue"
    assert unique_words_of("a a a", ["a"]) == ""


def test_encode_with_unique_words_drops_the_starting_texts_first_word():
    model = DeDiffusion(tiny_config("", "", "tokens.init_text=red", "tokens.init_logit=0.5"), micro()).eval()
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    written = model.encode(images)
    assert any("red" in t.split() for t in written)  # the filler is written somewhere, so dropping it shows
    expected = [unique_words_of(t, ["red"]) for t in written]
    assert model.encode(images, unique_words=True) == expected
    assert all("red" not in t.split() and len(set(t.split())) == len(t.split()) for t in expected)
    plain = DeDiffusion(tiny_config(), micro()).eval()
    assert plain.encode(images, unique_words=True) == [unique_words_of(t) for t in plain.encode(images)]


def test_save_then_load_gives_the_same_texts(tmp_path, micro_decoder_dir):
    decoder = TextToImageDecoder.from_pretrained(micro_decoder_dir)
    model = DeDiffusion(tiny_config(str(micro_decoder_dir)), decoder).eval()
    train_a_few_steps(model)
    model.save_pretrained(tmp_path / "m")
    loaded = DeDiffusion.from_pretrained(tmp_path / "m").eval()  # decoder found from the recorded path
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    assert loaded.encode(images) == model.encode(images)
    assert torch.equal(loaded.logits(images), model.logits(images))
    assert json.loads((tmp_path / "m" / "decoder.json").read_text())["fingerprint"] == decoder.fingerprint()


def test_a_decoder_given_relative_to_the_working_directory_is_found_from_anywhere(
    tmp_path, micro_decoder_dir, monkeypatch
):
    import shutil

    shutil.copytree(micro_decoder_dir, tmp_path / "project" / "decoder")
    monkeypatch.chdir(tmp_path / "project")
    model = DeDiffusion(tiny_config("decoder"), TextToImageDecoder.from_pretrained("decoder")).eval()
    model.save_pretrained(Path("runs/m/final"))
    assert json.loads(Path("runs/m/final/decoder.json").read_text())["path"] == "../../../decoder"
    monkeypatch.chdir(tmp_path)  # another working directory: "decoder" means nothing here
    loaded = DeDiffusion.from_pretrained("project/runs/m/final").eval()
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    assert loaded.encode(images) == model.encode(images)


def test_loading_against_another_vocabulary_is_refused(tmp_path):
    model = DeDiffusion(tiny_config(), micro())
    model.save_pretrained(tmp_path / "m")
    other = build_micro_decoder(
        ["cat", "dog", "bird", "fish"], resolution=8, latent=False, max_length=8, unet_channels=(16, 32)
    )
    with pytest.raises(CheckpointMismatchError, match="trained for decoder"):
        DeDiffusion.from_pretrained(tmp_path / "m", decoder=other)


def test_damaged_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = DeDiffusion(tiny_config(), micro())
    model.save_pretrained(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    state["head.weight"] = state["head.weight"][:, :3].contiguous()
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="damaged"):
        DeDiffusion.from_pretrained(tmp_path / "m", decoder=micro())


def test_more_tokens_than_the_text_encoder_takes_is_refused():
    with pytest.raises(ValueError, match="exceeds"):
        DeDiffusion(tiny_config("", "", "encoder.num_tokens=7"), micro())


def test_a_starting_text_is_what_a_fresh_encoder_writes_for_any_image():
    model = DeDiffusion(tiny_config("", "", "tokens.init_text=red dark", "tokens.init_logit=30"), micro()).eval()
    texts = model.encode(torch.rand(3, 3, 8, 8) * 2 - 1)
    assert all(text.split()[:2] == ["red", "dark"] for text in texts)
    plain = DeDiffusion(tiny_config(), micro()).eval()
    assert not torch.equal(plain.encoder.slot_bias, model.encoder.slot_bias) and not plain.encoder.slot_bias.any()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tokens.init_text=red dark", "tokens.deny=[dark]"], "may not write: \\['dark'\\]"),
        (["tokens.init_text=red red red red red"], "has 5 tokens; encoder.num_tokens is 4"),
    ],
)
def test_a_starting_text_the_encoder_cannot_write_is_refused(overrides, message):
    from dediffusion.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        DeDiffusion(tiny_config("", "", *overrides), micro())


def test_with_allow_end_the_encoder_may_end_its_text_and_says_nothing_after():
    decoder = micro()
    model = DeDiffusion(tiny_config("", "", "tokens.allow_end=true"), decoder)
    plain = DeDiffusion(tiny_config(), decoder)
    end = decoder.end_id
    assert model.vocab_mask[end] and not plain.vocab_mask[end]
    red, blue = decoder.text_token_ids("red blue")
    ids = torch.tensor([[red, end, blue, blue], [end, red, red, red], [red, blue, red, blue]])
    assert model.texts_of(ids) == ["red", "", "red blue red blue"]
    assert plain.texts_of(ids[2:]) == ["red blue red blue"]
