"""Which images (and which random seeds) make up each training step: pure functions of the step.

Global position p (counted over the whole run) is item `perm_e[p % n]` of a permutation drawn for
epoch e = p // n. Each position also gets its own sample seed. Because both depend only on
(seed, step, position), a resumed run sees exactly the batches an uninterrupted run sees, and N
processes that split a global batch see exactly what one process sees.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=4)
def epoch_permutation(num_items: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return tuple(torch.randperm(num_items, generator=generator).tolist())


def step_positions(step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> range:
    """This process's slice of the global positions of `step` (the global batch is split evenly)."""
    if batch_size % world_size:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by the number of processes ({world_size})")
    local = batch_size // world_size
    first = step * batch_size + rank * local
    return range(first, first + local)


def items_for(positions: range, num_items: int, seed: int) -> list[int]:
    return [epoch_permutation(num_items, seed, p // num_items)[p % num_items] for p in positions]


def seeds_for(positions: range, seed: int) -> torch.Tensor:
    """One noise seed per global position (B,)."""
    return torch.tensor([(seed << 40) + p for p in positions], dtype=torch.int64)
