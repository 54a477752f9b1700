"""Step-indexed batches: the keys of step s on rank r are a pure function of (seed, s, r).

Each pass over the data (an epoch) is a fresh permutation seeded by (seed, epoch); a step
takes the next `batch_size * world_size` indices and each rank its own slice. Keys are
(index, epoch) pairs, so a dataset can draw a different text or instruction per pass.
Resuming at step s therefore replays exactly the batches an uninterrupted run would see.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from unilseg.errors import UnilsegError


class StepBatchSampler:
    """Batches of keys for steps start_step .. total_steps - 1 (use as a DataLoader batch_sampler)."""

    def __init__(self, num_items: int, batch_size: int, total_steps: int, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.global_batch = batch_size * world_size
        if num_items < self.global_batch:
            raise UnilsegError(
                f"the training data has {num_items} items, fewer than one global batch "
                f"({batch_size} x {world_size} processes); use more data or a smaller batch_size"
            )
        self.num_items, self.batch_size, self.total_steps = num_items, batch_size, total_steps
        self.seed, self.start_step, self.rank = seed, start_step, rank
        self.steps_per_epoch = num_items // self.global_batch
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def keys(self, step: int) -> list[tuple[int, int]]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_items))
        start = pos * self.global_batch + self.rank * self.batch_size
        return [(int(i), epoch) for i in self._perm[1][start : start + self.batch_size]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.keys(step)
