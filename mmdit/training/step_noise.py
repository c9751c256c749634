"""The random numbers of a training step (noise, times, condition dropout), drawn so that a DDP run over W
processes trains the same weights as one process over the same global batch.

With W ranks and a local batch of b items, torch's DistributedSampler deals each step's items interleaved:
rank r's j-th item is item k = r + W·j of the global batch of W·b items one process would see with the same
seed (see `mmdit.training.data.MediaDataModule`). Drawing noise from each rank's own global RNG could never
match that, so every draw of a step is made for the whole global batch from a CPU generator seeded by (recipe
seed, training batch index), and each rank keeps its rows r::W. On the CPU, the numbers are also the same
whatever the device. The price is W times the draws of one rank, on the CPU: milliseconds for a DiT-XL/2
global batch (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for training batch `step` of a run seeded `seed` (the same on every rank)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class StepNoise:
    """Draws for a rank's rows of a global batch. generator: the step's CPU generator; rank, world_size:
    this process's place in the run (0 and 1 in one process); device: where the draws are used."""

    def __init__(
        self,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} ranks")
        self.generator, self.rank, self.world_size, self.device = generator, rank, world_size, device

    def __call__(self, sample: Callable[[int, torch.Generator], Tensor], rows: int) -> Tensor:
        """sample(n, generator) -> [n, ...] draws on the CPU, called for the global n = rows · world_size;
        returns this rank's rows [rows, ...] (global rows rank, rank + W, ...) on the device. Every rank
        must make the same calls in the same order, as the training step's code does."""
        drawn = sample(rows * self.world_size, self.generator)
        return drawn[self.rank :: self.world_size].to(self.device)

    def normal(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Standard normal noise [B, ...] for this rank's B = shape[0] rows."""
        return self(lambda n, g: torch.randn(n, *shape[1:], generator=g), shape[0])

    def uniform(self, rows: int) -> Tensor:
        """[rows] uniform numbers in [0, 1) (dropout decisions)."""
        return self(lambda n, g: torch.rand(n, generator=g), rows)
