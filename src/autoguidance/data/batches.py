"""Which dataset rows make up the training batch at a given step: a pure function of (seed, step).

Training reads the data as an endless stream: epoch 0's shuffled order, then epoch 1's, and so on, each
epoch a fresh permutation seeded by (seed, epoch). Global batch `step` is the slice
[step * batch_size, (step + 1) * batch_size) of that stream, so it may straddle two epochs, and every row
appears exactly once per epoch. With no sampler state, resuming at step k reproduces the batches of an
uninterrupted run exactly, whatever the number of processes before and after.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..errors import UserInputError
from ..seeds import MAX_SEED


@lru_cache(maxsize=4)  # a batch touches at most a few epochs; one permutation each, reused across steps
def _epoch_permutation(dataset_size: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order (dataset_size,) int64 of one epoch."""
    # numpy's legacy RandomState streams are frozen by numpy's compatibility policy, so a run resumed
    # under a newer numpy (or torch) still draws the same order. It takes 32-bit words: split the 64-bit ints.
    words = [seed & 0xFFFFFFFF, seed >> 32, epoch & 0xFFFFFFFF, epoch >> 32]
    order = np.random.RandomState(words).permutation(dataset_size).astype(np.int64)
    order.setflags(write=False)  # cached and shared: nobody may shuffle it in place
    return order


def batch_indices(
    dataset_size: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """Row indices (batch_size // world_size,) int64 of this rank's share of global batch `step`.

    The global batch of `batch_size` rows is split into `world_size` contiguous equal shares, rank r
    taking share r; so the shares of ranks 0..world_size-1, concatenated, are the single-process batch.
    """
    if dataset_size < 1:
        raise UserInputError(f"cannot draw batches from an empty dataset (size {dataset_size})")
    if batch_size < 1:
        raise UserInputError(f"batch size must be at least 1, got {batch_size}")
    if step < 0:
        raise UserInputError(f"training step must be non-negative, got {step}")
    if not 0 <= seed <= MAX_SEED:
        raise UserInputError(f"data seed must lie in [0, 2^63), got {seed}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserInputError(f"rank {rank} is not in [0, world size {world_size})")
    if batch_size % world_size != 0:
        raise UserInputError(
            f"batch size {batch_size} is not divisible by the number of processes {world_size}"
        )
    share = batch_size // world_size
    start = step * batch_size + rank * share  # position of this share in the endless stream
    positions = np.arange(start, start + share, dtype=np.int64)
    epochs, offsets = np.divmod(positions, dataset_size)
    out = np.empty(share, dtype=np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _epoch_permutation(dataset_size, seed, int(epoch))[offsets[where]]
    return torch.from_numpy(out)
