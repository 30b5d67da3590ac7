"""Reconstruction scoring: the redraws of each prompt source are compared with the references."""

import pytest
import torch

from dediffusion.eval.reconstruction import best_over_sweep, score_prompt_sources
from dediffusion.models.sampling import generate_from_prompts
from dediffusion.world.scoring import WorldScorer


class EchoDecoder:
    """Draws the reference image for the prompt "copy", its negative for anything else; records calls."""

    device = torch.device("cpu")

    def __init__(self, references):
        self.references = references
        self.calls = []

    def generate(self, prompts, negative, guidance_scale, num_inference_steps, generators):
        self.calls.append((list(prompts), guidance_scale, [g.initial_seed() for g in generators]))
        return torch.stack([self._draw(p) for p in prompts])

    def _draw(self, prompt):
        if not prompt:
            return torch.zeros_like(self.references[0])
        return self.references[int(prompt.split()[-1])] * (1 if prompt.startswith("copy") else -1)


def features(images):  # stand-in for EffNet: two statistics per image
    return torch.stack([images.mean((1, 2, 3)), images.std((1, 2, 3))], 1)


def read_scenes(images):  # "perception": bright images are read as the scene "bright"
    return [{"background": "bright" if i.mean() > 0 else "dark", "objects": []} for i in images]


@pytest.fixture
def references():
    return torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25


def test_copying_source_scores_perfectly_and_the_other_does_not(references):
    decoder = EchoDecoder(references)
    sources = {"copy": [f"copy {i}" for i in range(6)], "flip": [f"flip {i}" for i in range(6)]}
    scenes = [{"background": "bright", "objects": []}] * 6
    scorer = WorldScorer(read_scenes)
    cells = score_prompt_sources(decoder, sources, references, [1.0, 3.0], 5, features, scenes, scorer)
    for scale in ("1.0", "3.0"):
        assert cells["copy"][scale]["fd_effnet"] == pytest.approx(0.0, abs=1e-6)
        assert cells["copy"][scale]["scene_accuracy"] == 1.0
        assert cells["flip"][scale]["fd_effnet"] > 0.1 and cells["flip"][scale]["scene_accuracy"] == 0.0
    assert cells["copy"]["1.0"]["accuracy_by_kind"]["background"] == 1.0
    assert cells["flip"]["1.0"]["accuracy_by_kind"]["background"] == 0.0
    best = best_over_sweep(cells)
    assert best["copy"]["scene_accuracy"] == 1.0 and best["copy"]["fd_effnet_guidance"] in (1.0, 3.0)
    assert best["copy"]["accuracy_by_kind"] == cells["copy"]["1.0"]["accuracy_by_kind"]


def test_accuracy_by_kind_splits_the_facts_a_redraw_gets_wrong(references):
    circle = {"shape": "circle", "color": "red", "size": "small", "row": 0, "col": 0}
    scenes = [{"background": "bright", "objects": [circle]}] * 6

    def reads_a_square(images):
        return [{**scenes[0], "objects": [{**scenes[0]["objects"][0], "shape": "square"}]} for _ in images]

    cells = score_prompt_sources(EchoDecoder(references), {"copy": [f"copy {i}" for i in range(6)]}, references,
                                 [1.0], 5, features, scenes, WorldScorer(reads_a_square))  # fmt: skip
    by_kind = cells["copy"]["1.0"]["accuracy_by_kind"]
    assert cells["copy"]["1.0"]["objects_per_image"] == 1.0  # the reader found one object in each redraw
    assert best_over_sweep(cells)["copy"]["objects_per_image"] == 1.0
    assert by_kind["shape"] == 0.0
    assert by_kind["background"] == by_kind["position"] == by_kind["color"] == by_kind["size"] == 1.0
    assert by_kind["all"] == pytest.approx(4 / 5) == cells["copy"]["1.0"]["scene_accuracy"]


def test_without_scenes_scene_accuracy_is_none_and_fd_is_still_scored(references):
    cells = score_prompt_sources(EchoDecoder(references), {"copy": [f"copy {i}" for i in range(6)]}, references,
                                 [2.0], 5, features)  # fmt: skip
    assert cells["copy"]["2.0"]["scene_accuracy"] is None and cells["copy"]["2.0"]["accuracy_by_kind"] is None
    assert cells["copy"]["2.0"]["objects_per_image"] is None
    best = best_over_sweep(cells)["copy"]
    assert best["scene_accuracy"] is None and best["accuracy_by_kind"] is None and best["objects_per_image"] is None
    assert best["fd_effnet"] == pytest.approx(0.0, abs=1e-6)


def test_empty_prompts_are_drawn_once_and_shared_across_the_sweep(references):
    decoder = EchoDecoder(references)
    cells = score_prompt_sources(decoder, {"empty": [""] * 6}, references, [1.0, 2.0, 4.0], 5, features)
    assert len(decoder.calls) == 1
    assert cells["empty"]["1.0"] == cells["empty"]["2.0"] == cells["empty"]["4.0"]


def test_image_i_uses_seed_plus_i_whatever_the_batch_size(references):
    decoder = EchoDecoder(references)
    generate_from_prompts(decoder, [f"copy {i}" for i in range(6)], 1.0, 5, batch_size=4, seed=10)
    assert [s for call in decoder.calls for s in call[2]] == list(range(10, 16))


def test_a_source_with_the_wrong_number_of_texts_is_refused(references):
    with pytest.raises(ValueError, match="'short' has 2 texts for 6 images"):
        score_prompt_sources(EchoDecoder(references), {"short": ["copy 0", "copy 1"]}, references, [1.0], 5, features)


def test_draw_dtype_samples_under_autocast_and_returns_float32(references):
    class AutocastProbe(EchoDecoder):
        def generate(self, prompts, negative, guidance_scale, num_inference_steps, generators):
            self.calls.append(torch.is_autocast_enabled("cpu"))
            weight = torch.ones(4, 4)  # a matmul takes autocast's dtype: what a UNet layer would see
            return torch.stack([self._draw(p) @ weight for p in prompts])

    decoder = AutocastProbe(references)
    plain = generate_from_prompts(decoder, ["copy 0", "copy 1"], 1.0, 5)
    low = generate_from_prompts(decoder, ["copy 0", "copy 1"], 1.0, 5, dtype=torch.bfloat16)
    assert decoder.calls == [False, True]
    assert plain.dtype == low.dtype == torch.float32
    assert torch.allclose(low, plain, atol=0.05) and not torch.equal(low, plain)
