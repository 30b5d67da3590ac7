import torch
from conftest import micro

from dediffusion.eval.prompt_inversion import invert_prompts


def images(n):
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_inversion_lowers_the_loss_below_the_starting_prompts_and_uses_allowed_tokens():
    decoder = micro()
    mask = decoder.vocabulary_mask()
    mask[decoder.token_strings().index("red")] = False
    start = invert_prompts(decoder, images(3), num_tokens=4, steps=1, score_every=100, vocab_mask=mask)
    found = invert_prompts(decoder, images(3), num_tokens=4, steps=60, score_every=10, vocab_mask=mask)
    assert found.token_ids.shape == (3, 4) and len(found.texts) == 3
    assert mask[found.token_ids].all()
    assert (found.losses <= start.losses).all() and found.losses.mean() < start.losses.mean()
    assert found.history[0] == start.history[0] and found.history[-1] == found.losses.mean().item()


def test_each_images_prompt_depends_only_on_its_own_seed():
    decoder = micro()
    batch = invert_prompts(decoder, images(3), num_tokens=4, steps=20, score_every=5, seeds=[7, 8, 9])
    alone = invert_prompts(decoder, images(3)[1:2], num_tokens=4, steps=20, score_every=5, seeds=[8])
    assert torch.equal(batch.token_ids[1:2], alone.token_ids)
    assert torch.allclose(batch.losses[1:2], alone.losses, atol=1e-6)
