"""Zero-order token search (models/search.py) on micro decoders."""

import pytest
import torch
from conftest import micro

from dediffusion.models.dediffusion import sample_generators
from dediffusion.models.search import _gradient_swaps, search_tokens


def setup(batch=3, latent=True):
    decoder = micro(latent=latent)
    side = decoder.resolution
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = torch.full((batch, 4), 5)
    return decoder, images, tokens, torch.arange(4, decoder.vocab_size)


@pytest.mark.parametrize("proposal", ["random", "gradient"])
def test_the_best_text_differs_in_at_most_one_allowed_token_and_never_loses(proposal):
    decoder, images, tokens, allowed = setup()
    allowed = allowed[allowed != 6]
    generators = sample_generators([1, 2, 3], "cpu")
    best, searched, current = search_tokens(decoder, images, tokens, allowed, generators, 6, 2, proposal=proposal)
    changed = best != tokens
    assert (changed.sum(1) <= 1).all() and torch.isin(best[changed], allowed).all()
    assert (searched.sum(1) == 1).all() and not (changed & ~searched).any()
    assert current.shape == (3,) and torch.isfinite(current).all()
    # scored again on the same draws, the chosen text is at least as good as the text it started from
    generators = sample_generators([1, 2, 3], "cpu")
    _, _, before = search_tokens(decoder, images, best, allowed, generators, 6, 2, proposal=proposal)
    assert (before <= current + 1e-6).all()


def test_improving_accepts_every_swap_that_beats_the_current_text_on_its_own():
    decoder, images, tokens, allowed = setup(batch=4)
    args = (decoder, images, tokens, allowed)
    kept, searched, _ = search_tokens(
        *args, sample_generators(range(4), "cpu"), 8, 2, proposal="gradient", accept="improving"
    )
    best, _, _ = search_tokens(*args, sample_generators(range(4), "cpu"), 8, 2, proposal="gradient")
    changed = kept != tokens
    assert not (changed & ~searched).any() and (searched.sum(1) >= 1).all()
    assert ((best != tokens) & (kept != best)).sum() == 0  # the best swap is among those accepted
    assert changed.sum() > (best != tokens).sum()  # on these draws, some image has several
    with pytest.raises(ValueError, match="accept"):
        search_tokens(*args, sample_generators(range(4), "cpu"), accept="all")


@pytest.mark.parametrize("proposal", ["random", "gradient"])
def test_each_image_is_searched_on_its_own_draws(proposal):
    decoder, images, tokens, allowed = setup()
    together, searched, losses = search_tokens(
        decoder, images, tokens, allowed, sample_generators([1, 2, 3], "cpu"), proposal=proposal
    )
    alone, searched_alone, loss = search_tokens(
        decoder, images[1:2], tokens[1:2], allowed, sample_generators([2], "cpu"), proposal=proposal
    )
    assert torch.equal(together[1:2], alone) and torch.equal(searched[1:2], searched_alone)
    assert torch.allclose(losses[1:2], loss, atol=1e-6)


def test_token_states_equal_the_soft_path_on_one_hot_rows():
    decoder, _, _, _ = setup()
    tokens = torch.tensor([[5, 6, 7, 8], [9, 5, 5, 4]])
    one_hot = torch.nn.functional.one_hot(tokens, decoder.vocab_size).float()
    assert torch.allclose(decoder.token_states(tokens), decoder.soft_text_embeddings(one_hot), atol=1e-5)


def test_gradient_proposals_are_the_swaps_the_gradient_ranks_first():
    decoder, images, tokens, allowed = setup(batch=2)
    slots, words = _gradient_swaps(decoder, images, tokens, allowed, sample_generators([4, 5], "cpu"), 5, 0.0)
    # the same gradient, taken by hand on the same draws
    one_hot = torch.nn.functional.one_hot(tokens, decoder.vocab_size).float().requires_grad_()
    states = decoder.soft_text_embeddings(one_hot)
    decoder.denoising_loss(images, states, sample_generators([4, 5], "cpu")).sum().backward()
    change = one_hot.grad - one_hot.grad.gather(-1, tokens[..., None])
    for b in range(2):
        chosen = change[b, slots[b], words[b]]
        others = [change[b, n, v] for n in range(tokens.shape[1]) for v in allowed if v != tokens[b, n]]
        assert torch.isin(words[b], allowed).all() and (words[b] != tokens[b, slots[b]]).all()
        assert len({(int(n), int(v)) for n, v in zip(slots[b], words[b])}) == 5  # five different swaps
        assert chosen.max() <= sorted(others)[4] + 1e-7  # and no other swap ranks above them


def test_gradient_proposals_beyond_the_possible_swaps_leave_the_text_as_it_is():
    decoder, images, tokens, _ = setup(batch=1)
    allowed = torch.tensor([5, 7])  # one word other than the current one at each of 4 positions
    slots, words = _gradient_swaps(decoder, images, tokens, allowed, sample_generators([1], "cpu"), 6, 0.0)
    swapped = words != tokens.gather(1, slots)
    assert swapped.sum() == 4 and (words[swapped] == 7).all() and (words[~swapped] == 5).all()
