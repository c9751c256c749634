"""Sampling that stops at the first non-finite prediction: diverged weights (or a guidance scale that
blows up) would otherwise decode NaN into black images or silent audio and write them as if fine."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from mmdit.objectives.objective import Predict, State


class NonFiniteSample(FloatingPointError):
    """A prediction held NaN or Inf while sampling; the message names the step and the stream."""


class FiniteWatch:
    """Wraps a sampler's `predict` and its `progress`: the steps are counted as the sampler takes them, and
    every prediction {stream: [B, N, F_out]} is checked to be finite (one reduction per call)."""

    def __init__(self, predict: Predict, progress: Callable = iter) -> None:
        self._predict, self._progress = predict, progress
        self.step, self.steps = 0, 0

    def progress(self, steps: Iterable) -> Iterator:
        steps = list(steps)
        self.steps = len(steps)
        for step, item in enumerate(self._progress(steps), start=1):
            self.step = step
            yield item

    def predict(self, x: State, t: Tensor) -> State:
        out = self._predict(x, t)
        for stream, value in out.items():
            if not torch.isfinite(value).all():
                raise NonFiniteSample(
                    f"sampling step {self.step} of {self.steps}: the prediction of stream {stream!r} is NaN "
                    "or infinite (diverged weights, or too large a --cfg); no file was written"
                )
        return out
