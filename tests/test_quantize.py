import math

import pytest
import torch

from dediffusion.models.quantize import gumbel_softmax, hard_tokens, sample_gumbel, temperature_at


def test_temperature_anneals_exponentially_from_start_to_end():
    assert temperature_at(0, 2.0, 0.3, 100) == pytest.approx(2.0)
    assert temperature_at(100, 2.0, 0.3, 100) == pytest.approx(0.3)
    assert temperature_at(500, 2.0, 0.3, 100) == pytest.approx(0.3)
    assert temperature_at(50, 2.0, 0.3, 100) == pytest.approx(math.sqrt(2.0 * 0.3))  # geometric midpoint


def test_gumbel_softmax_rows_are_distributions_and_masked_tokens_get_zero():
    logits = torch.randn(2, 3, 10)
    logits[..., 4] = float("-inf")
    noise = sample_gumbel((3, 10), [torch.Generator().manual_seed(i) for i in range(2)], "cpu")
    probs = gumbel_softmax(logits, 0.5, noise)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3))
    assert (probs[..., 4] == 0).all()


def test_noise_depends_only_on_each_rows_generator():
    a = sample_gumbel((3, 5), [torch.Generator().manual_seed(s) for s in (1, 2)], "cpu")
    b = sample_gumbel((3, 5), [torch.Generator().manual_seed(s) for s in (2, 1)], "cpu")
    assert torch.equal(a[0], b[1]) and not torch.equal(a[0], a[1])


def test_low_temperature_approaches_one_hot_of_perturbed_argmax():
    logits, noise = torch.randn(1, 4, 7), torch.randn(1, 4, 7)
    probs = gumbel_softmax(logits, 1e-3, noise)
    assert torch.equal(probs.argmax(-1), (logits + noise).argmax(-1))
    assert (probs.max(-1).values > 0.99).all()


def test_straight_through_is_hard_forward_with_soft_gradient():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    weights = torch.randn(6)
    hard = gumbel_softmax(logits, 0.7, None, straight_through=True)
    one_hot = torch.nn.functional.one_hot(hard_tokens(logits), 6).float()
    assert torch.allclose(hard, one_hot)  # exact up to float rounding of hard + soft - soft
    (hard * weights).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    (gumbel_softmax(logits, 0.7, None) * weights).sum().backward()
    assert torch.allclose(grad_hard, logits.grad)
