"""FD-EffNet: the Frechet distance against closed forms, and the feature extractor's contract."""

import numpy as np
import pytest
import torch

from dediffusion.eval.frechet import EffNetFeatures, fd_effnet, feature_statistics, frechet_distance


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    var_a, var_b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_rotation_invariant_and_zero_for_equal_gaussians():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4))
    cov_a, cov_b = a @ a.T + np.eye(4), np.diag([1.0, 2.0, 3.0, 4.0])
    mu = rng.normal(size=4)
    assert frechet_distance(mu, cov_a, mu, cov_a) == pytest.approx(0.0, abs=1e-8)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))  # rotating both Gaussians changes nothing
    base = frechet_distance(mu, cov_a, 0 * mu, cov_b)
    assert frechet_distance(q @ mu, q @ cov_a @ q.T, 0 * mu, q @ cov_b @ q.T) == pytest.approx(base, rel=1e-8)
    # one dimension: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    assert frechet_distance(np.array([1.0]), [[4.0]], np.array([0.0]), [[1.0]]) == pytest.approx(1 + 1)


def test_feature_statistics_and_shape_errors():
    mu, cov = feature_statistics(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    assert np.allclose(mu, [1, 2]) and np.allclose(cov, [[2, 2], [2, 2]])
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_fd_effnet_separates_image_sets():
    features = EffNetFeatures(batch_size=8)
    g = torch.Generator().manual_seed(0)
    flat_red = torch.tensor([1.0, -1, -1]).view(1, 3, 1, 1) + 0.05 * torch.randn(8, 3, 32, 32, generator=g)
    flat_red2 = torch.tensor([1.0, -1, -1]).view(1, 3, 1, 1) + 0.05 * torch.randn(8, 3, 32, 32, generator=g)
    noise = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    assert features(noise).shape == (8, 1280)
    same, different = fd_effnet(flat_red, flat_red2, features), fd_effnet(flat_red, noise, features)
    assert 0 <= same < 0.1 * different
