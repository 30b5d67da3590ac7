"""Few-shot classification from text: prototype episodes on embeddings with known structure."""

import pytest
import torch

from dediffusion.eval.fewshot import few_shot_accuracy

LABELS = [c for c in "abcdefg" for _ in range(4)]


def clustered(spread: float) -> torch.Tensor:
    centres = torch.eye(8)[: len(set(LABELS))] * 10
    noise = torch.randn(len(LABELS), 8, generator=torch.Generator().manual_seed(0)) * spread
    return torch.stack([centres["abcdefg".index(c)] for c in LABELS]) + noise


def test_separated_classes_are_always_right():
    assert few_shot_accuracy(clustered(0.1), LABELS, episodes=50) == 1.0


def test_identical_embeddings_score_exactly_chance():
    assert few_shot_accuracy(torch.ones(len(LABELS), 8), LABELS, ways=5, episodes=50) == pytest.approx(1 / 5)


def test_overlapping_classes_sit_between_chance_and_perfect_and_are_reproducible():
    noisy = clustered(8.0)
    first = few_shot_accuracy(noisy, LABELS, episodes=100, seed=3)
    assert 0.2 < first < 1.0
    assert few_shot_accuracy(noisy, LABELS, episodes=100, seed=3) == first


def test_too_few_classes_or_mismatched_labels_are_refused():
    with pytest.raises(ValueError, match="5-way 1-shot needs 5 classes"):
        few_shot_accuracy(torch.ones(4, 2), ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match="3 embeddings but 2 labels"):
        few_shot_accuracy(torch.ones(3, 2), ["a", "b"])
