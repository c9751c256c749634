"""The order and the randomness of the training items as functions of (seed, epoch, position), so that a run
resumed from a checkpoint, mid-epoch or at an epoch's end, trains the batches the uninterrupted run trains.

`ResumableLoader` is a DataLoader that Lightning's stateful-dataloader protocol saves in a checkpoint's loop
state (`state_dict` / `load_state_dict`): the epoch and how many of its batches were yielded. On resume its
`EpochOrder` sampler deals the same epoch's permutation from the next batch on. `SeededItems` makes an item's
own random draws (a caption's phrasing, an augmentation) a function of (seed, epoch, index) too: they would
otherwise come from a process's global generators, which neither a checkpoint nor a worker process keeps.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochOrder(DistributedSampler):
    """torch's DistributedSampler (each epoch's permutation seeded by (seed, epoch), dealt interleaved over
    the ranks) yielding `(epoch, index)` pairs for `SeededItems`, from position `start` of this rank's share
    of the epoch. `start` is set by a resumed loader and holds until the epoch changes."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start :]
        return iter([(self.epoch, i) for i in indices])


class ResumableLoader(DataLoader):
    """The training DataLoader over an `EpochOrder` sampler, with the state Lightning stores at each
    checkpoint: {"epoch", "batches"}, the epoch and the batches of it yielded so far. Its length stays the
    whole epoch's, as Lightning counts a resumed epoch's batches from the ones already trained."""

    def __init__(self, dataset: Dataset, sampler: EpochOrder, **kwargs: Any):
        super().__init__(dataset, sampler=sampler, drop_last=True, **kwargs)
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:
        # A generator, so that the sampler deals its indices at the first batch: after Lightning's
        # `set_epoch`, which comes after the loader's iterator is made.
        self.batches = self.sampler.start // self.batch_size
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self):  # saved at the epoch's end: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.start = batches * self.batch_size
        self.batches = batches


class SeededItems(Dataset):
    """`dataset` read at `(epoch, index)`: item `index`, with Python's, NumPy's and torch's global CPU
    generators seeded by (seed, epoch, index) while it is made, and restored after. Items keep
    `dataset`'s `classes`."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self.classes = getattr(dataset, "classes", {})  # trajectory datasets have none

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        state, numpy_state = random.getstate(), np.random.get_state()
        try:
            random.seed(f"{self.seed}/{epoch}/{index}")
            np.random.seed([self.seed, epoch, index])
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(hash((self.seed, epoch, index)) % 2**63)
                return self.dataset[index]
        finally:
            random.setstate(state)
            np.random.set_state(numpy_state)
