"""A DataLoader whose position (epoch and batch) is part of the checkpoint.

Shuffling is a permutation drawn from a generator seeded by ``(seed, epoch)``, never from the
global RNG, so a resumed run sees the same batches in the same order as an uninterrupted one.
Put the loader into your :class:`~unbroken.State`; it has ``state_dict``/``load_state_dict``.

Exact for ``num_workers=0`` and for datasets whose items do not draw random numbers inside
worker processes (random augmentation in workers restarts its streams after a resume).
Requires torch (``pip install unbroken[torch]``).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader

from ..errors import ConfigError, StateMismatch

_SEED_STRIDE = 1_000_003


class ResumableLoader:
    """Iterate batches epoch after epoch, resuming at the batch after the last one consumed."""

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, **loader_kwargs: Any):
        for key in ("sampler", "batch_sampler", "shuffle", "generator", "batch_size", "drop_last"):
            if key in loader_kwargs:
                raise ConfigError(f"ResumableLoader sets {key!r} itself; do not pass it")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, not {batch_size}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.drop_last, self.loader_kwargs = drop_last, loader_kwargs
        self.epoch = 0
        self.batch = 0  # batches of this epoch already handed out

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "size": len(self.dataset)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed") != self.seed or state.get("size") != len(self.dataset):
            raise StateMismatch(
                f"loader was saved with seed {state.get('seed')} over {state.get('size')} items, "
                f"now seed {self.seed} over {len(self.dataset)}: the data order would differ"
            )
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def __iter__(self) -> Iterator[Any]:
        """The rest of the current epoch; moves on to the next epoch when it is exhausted."""
        if self.batch >= len(self):
            self.epoch, self.batch = self.epoch + 1, 0
        for batch in self._loader():
            self.batch += 1
            yield batch
        self.epoch, self.batch = self.epoch + 1, 0

    def batches(self) -> Iterator[Any]:
        """Batches forever, epoch after epoch (for step-based loops)."""
        while True:
            yield from self

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist() if self.shuffle \
            else list(range(len(self.dataset)))
        batches = list(BatchSampler(order, self.batch_size, self.drop_last))[self.batch:]
        return DataLoader(self.dataset, batch_sampler=batches, generator=generator, **self.loader_kwargs)
