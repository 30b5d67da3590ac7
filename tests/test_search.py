"""Zero-order token search (models/search.py) on micro decoders."""

import torch
from conftest import micro

from dediffusion.models.dediffusion import sample_generators
from dediffusion.models.search import search_tokens


def setup(batch=3, latent=True):
    decoder = micro(latent=latent)
    side = decoder.resolution
    images = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = torch.full((batch, 4), 5)
    return decoder, images, tokens, torch.arange(4, decoder.vocab_size)


def test_the_best_text_differs_in_at_most_one_allowed_token_and_never_loses():
    decoder, images, tokens, allowed = setup()
    allowed = allowed[allowed != 6]
    best, slots, current = search_tokens(decoder, images, tokens, allowed, sample_generators([1, 2, 3], "cpu"), 6, 2)
    changed = best != tokens
    assert (changed.sum(1) <= 1).all() and torch.isin(best[changed], allowed).all()
    assert all(changed[b, slots[b]] == changed[b].any() for b in range(3))
    assert current.shape == (3,) and torch.isfinite(current).all()
    # scored again on the same draws, the chosen text is at least as good as the text it started from
    _, _, before = search_tokens(decoder, images, best, allowed, sample_generators([1, 2, 3], "cpu"), 6, 2)
    assert (before <= current + 1e-6).all()


def test_each_image_is_searched_on_its_own_draws():
    decoder, images, tokens, allowed = setup()
    together, slots, losses = search_tokens(decoder, images, tokens, allowed, sample_generators([1, 2, 3], "cpu"))
    alone, slot, loss = search_tokens(decoder, images[1:2], tokens[1:2], allowed, sample_generators([2], "cpu"))
    assert torch.equal(together[1:2], alone) and slots[1] == slot[0]
    assert torch.allclose(losses[1:2], loss, atol=1e-6)


def test_token_states_equal_the_soft_path_on_one_hot_rows():
    decoder, _, _, _ = setup()
    tokens = torch.tensor([[5, 6, 7, 8], [9, 5, 5, 4]])
    one_hot = torch.nn.functional.one_hot(tokens, decoder.vocab_size).float()
    assert torch.allclose(decoder.token_states(tokens), decoder.soft_text_embeddings(one_hot), atol=1e-5)
