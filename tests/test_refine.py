"""Refinement against the decoder's exact loss (models/refine.py) on a micro decoder."""

import torch
from conftest import micro

from dediffusion.models.refine import refine_tokens


def setup(batch=3):
    decoder = micro()
    side = decoder.resolution
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return decoder, images, torch.full((batch, 4), 5), torch.arange(4, decoder.vocab_size)


def test_each_round_keeps_only_swaps_that_lower_the_loss_on_the_fixed_draws():
    decoder, images, tokens, allowed = setup()
    refined, losses = refine_tokens(decoder, images, tokens, allowed, steps=4, num_candidates=6, num_noise=2)
    assert losses.shape == (4, 3) and (losses[1:] <= losses[:-1] + 1e-6).all()
    assert (losses[-1] < losses[0]).any()  # some image's text got better
    assert torch.isin(refined[refined != tokens], allowed).all()
    _, again = refine_tokens(decoder, images, refined, allowed, steps=1, num_candidates=6, num_noise=2)
    assert (again[0] <= losses[-1] + 1e-6).all()  # the refined text scores at most the last round's


def test_no_rounds_leave_the_text_as_it_is_and_refinement_is_deterministic():
    decoder, images, tokens, allowed = setup()
    same, losses = refine_tokens(decoder, images, tokens, allowed, steps=0)
    assert torch.equal(same, tokens) and losses.shape == (0, 3)
    first, _ = refine_tokens(decoder, images, tokens, allowed, steps=2, seed=3)
    assert torch.equal(first, refine_tokens(decoder, images, tokens, allowed, steps=2, seed=3)[0])
