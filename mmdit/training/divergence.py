"""A warning when the training loss grows by orders of magnitude over its lowest value so far: a run that
diverges (too high a learning rate) says so before its loss is NaN, and before its weights are exported."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

GROWTH = 1000.0
"""A loss this many times its running minimum is divergence, not noise (losses of a healthy run move by a
few times at most, between batches and over the warm-up)."""


class LossDivergence(L.Callback):
    """Compares each step's loss with the lowest one so far and warns once when it is `growth` times
    higher: one scalar read per step, which the module's check that the loss is finite already waits for."""

    def __init__(self, growth: float = GROWTH) -> None:
        self.growth = growth
        self.lowest, self.lowest_step, self.warned = math.inf, 0, False

    def on_train_batch_end(self, trainer: L.Trainer, module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        value = float(loss)
        if value < self.lowest:
            self.lowest, self.lowest_step = value, trainer.global_step
        elif not self.warned and value > self.growth * self.lowest:
            self.warned = True
            rank_zero_warn(
                f"the training loss diverges: {value:.4g} at step {trainer.global_step}, over "
                f"{self.growth:g} times its lowest, {self.lowest:.4g} at step {self.lowest_step}; lower "
                "optimizer.lr or set trainer.gradient_clip_val"
            )
