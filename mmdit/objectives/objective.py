"""The extension point of what the network learns: an `Objective` noises clean tokens, scores the
network's output on them, and integrates the network from noise back to data.

Rectified flow (`mmdit.objectives.flow`) and Gaussian diffusion (`mmdit.objectives.gaussian`) are its two
subclasses; the training module and the samplers see only this interface. Each objective has its own time:
flow's t in [0, 1], DDPM's integer step k. The backbone always sees `model_time` in [0, 1], where 0 is clean
data, so a stream given clean as a condition sits at model time 0 under either objective.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

State = dict[str, Tensor]
"""Streams being generated: {stream: x [B, N, F]}."""

Predict = Callable[[State, Tensor], State]
"""The network on a state: ({stream: x [B, N, F]}, model time [B]) -> {stream: output [B, N, F_out]}."""


@dataclass(frozen=True)
class Noised:
    """One stream's training sample: clean `x0` [B, N, F] and `noise` (same shape) mixed into `x_t` at the
    objective's own `time` [B], which the backbone sees as `model_time` [B] in [0, 1]."""

    x0: Tensor
    noise: Tensor
    x_t: Tensor
    time: Tensor
    model_time: Tensor


class Objective(ABC):
    """What the network is trained to predict about noised tokens, and how it samples."""

    samplers: ClassVar[tuple[str, ...]]
    """The sampler names `sample` takes; the first is the default."""

    schedules: ClassVar[tuple[str, ...]] = ("uniform",)
    """The time schedule names `sample` takes (evenly spaced steps for every objective)."""

    @abstractmethod
    def draw_time(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """[B] training times in the objective's own units (on the CPU)."""

    @abstractmethod
    def noise(self, x0: Tensor, noise: Tensor, time: Tensor) -> Noised:
        """Clean tokens x0 [B, N, F] and Gaussian noise (same shape) at `time` [B] -> the training sample."""

    @abstractmethod
    def loss(self, output: Tensor, sample: Noised, mask: Tensor) -> Tensor:
        """The network's output [B, N, F_out] on `sample` -> a scalar loss, a mean over the real tokens of
        mask [B, N]."""

    @abstractmethod
    def sample(
        self,
        predict: Predict,
        noise: State,
        steps: int,
        sampler: str,
        progress: Callable = iter,
        generator: torch.Generator | None = None,
        schedule: str = "uniform",
    ) -> State:
        """Integrate from `noise` ({stream: [B, N, F]}, pure noise) to data in `steps` steps with `sampler`
        at the times of `schedule` (one of `schedules`); `generator` draws any fresh noise a stochastic
        sampler adds."""

    def output_features(self, features: int) -> int:
        """F_out of the network for a stream of F features (a learned variance doubles it)."""
        return features

    def check_sampler(self, name: str) -> None:
        """An unknown sampler, or one of another objective, is an error that lists the valid ones."""
        if name not in self.samplers:
            raise KeyError(
                f"sampler {name!r} does not sample a {self.kind} objective; use one of {self.samplers}"
            )

    def check_schedule(self, name: str) -> None:
        """An unknown time schedule is an error that lists this objective's."""
        if name not in self.schedules:
            raise KeyError(
                f"schedule {name!r} does not sample a {self.kind} objective; use one of {self.schedules}"
            )

    @property
    @abstractmethod
    def kind(self) -> str:
        """The recipe's `objective.type` of this objective."""
