"""EMA of the weights through Lightning's WeightAveraging, with the usual decay warm-up.

Lightning's EMAWeightAveraging uses a constant decay, so after n updates the average still holds decay^n of
the initial weights (0.999^500 = 61%): a short run's previews and exports would show mostly the untrained
model. Ramping the decay as min(decay, (1 + n) / (10 + n)) lets the average follow early training and settle
to `decay` later.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


def ema_update(decay: float):
    """A `multi_avg_fn` for torch's AveragedModel: averaged <- d * averaged + (1 - d) * current, in place."""

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], updates: Tensor) -> None:
        n = float(updates)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1 + n) / (10 + n)))

    return update


class EMA(WeightAveraging):
    """Exponential moving average of all weights, updated after every optimizer step. Validation (and so
    the sample grids) runs with the averaged weights, checkpoints store them as `state_dict`, and they are
    copied into the model when training ends."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1), got {decay}")
        super().__init__(multi_avg_fn=ema_update(decay))
