"""The optimizer policy of every recipe: AdamW over the trainable parameters, linear warm-up then constant or
cosine decay, torch's fused AdamW where it can be used, and clipping under bf16-mixed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import DictConfig
from torch import nn


@dataclass
class LearningRateSchedule:
    """Multiplier of the base learning rate at optimizer step `step`: linear warm-up over `warmup` steps,
    then constant, or a cosine decay from `start_factor` at step `start` (by default 1 where warm-up ends)
    to 0 at step `total` (steps between warm-up and `start` are past: a resumed run never asks for them).
    A LambdaLR keeps these fields in its checkpointed state.

    A resumed run with a larger `trainer.max_steps` extends the schedule (`extend`): the cosine is re-laid
    from the resumed step and its learning rate to 0 at the new total, so the rate never jumps."""

    warmup: int
    decay: str
    total: int
    start: int | None = None
    start_factor: float = 1.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay == "constant":
            return 1.0
        start = self.warmup if self.start is None else self.start
        progress = min(1.0, max(0.0, (step - start) / (self.total - start)))
        return self.start_factor * 0.5 * (1 + math.cos(math.pi * progress))

    def extend(self, step: int, total: int) -> None:
        """Re-lay the decay after `step` (the resumed step) to end at `total` instead of `self.total`."""
        if total == self.total or self.decay == "constant":
            self.total = total
            return
        if step >= self.warmup:
            factor = self(step)
            if factor == 0.0:
                raise ValueError(
                    f"trainer.max_steps={total} extends a cosine schedule that reached learning rate 0 at "
                    f"step {self.total}: the steps after {step} would not train; keep "
                    f"trainer.max_steps={self.total}, or resume a checkpoint from before its end"
                )
            self.start, self.start_factor = step, factor
        if total <= max(step, self.warmup):
            raise ValueError(
                f"trainer.max_steps={total} ends before the cosine decay can start (step "
                f"{max(step, self.warmup)})"
            )
        self.total = total


FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types with torch's single-kernel (`fused=True`) AdamW."""


def optimizer_and_schedule(
    parameters: Iterable[nn.Parameter], opt: DictConfig, total_steps: int, scaled_loss: bool = False
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """A recipe's `optimizer` section -> AdamW over the trainable `parameters` and its per-step schedule
    (linear warm-up, then constant or a cosine to zero at `total_steps`).

    With `optimizer.fused` the AdamW is torch's fused one where every parameter's device has it: one kernel
    over all tensors instead of a dozen foreach ops that each sweep all of them (docs/performance.md); the
    same update to float32 rounding. Not under a `scaled_loss` (16-mixed's GradScaler): a fused AdamW
    unscales the gradients inside its step, after Lightning would have clipped them."""
    if opt.decay not in ("constant", "cosine"):
        raise ValueError(f"optimizer.decay must be constant or cosine, got {opt.decay!r}")
    if opt.decay == "cosine" and total_steps <= opt.warmup_steps:
        raise ValueError("optimizer.decay=cosine needs trainer.max_steps larger than optimizer.warmup_steps")
    trainable = [p for p in parameters if p.requires_grad]
    fused = opt.fused and not scaled_loss and all(p.device.type in FUSED_ADAMW_DEVICES for p in trainable)
    optimizer = torch.optim.AdamW(
        trainable, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay, fused=fused or None
    )
    factor = LearningRateSchedule(opt.warmup_steps, opt.decay, total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_without_scaler(trainer, optimizer: torch.optim.Optimizer, value, algorithm) -> bool:
    """Clip as 32-bit training does when a mixed precision runs without a GradScaler (bf16-mixed); returns
    whether it did. Lightning's mixed-precision plugin refuses to clip for any optimizer that can unscale in
    its step (the fused AdamW), bf16-mixed included, though without a scaler there is nothing to unscale."""
    plugin = trainer.precision_plugin
    if not isinstance(plugin, MixedPrecision) or plugin.scaler is not None:
        return False
    value = trainer.gradient_clip_val if value is None else value
    algorithm = algorithm or trainer.gradient_clip_algorithm or "norm"
    Precision.clip_gradients(plugin, optimizer, value or 0.0, GradClipAlgorithmType(algorithm))
    return True


class RecipeOptimization:
    """The optimizer half of a LightningModule trained from a recipe (`self.recipe`): the policy above, per
    step, and clipping that also works under bf16-mixed with the fused AdamW."""

    def configure_optimizers(self):
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        optimizer, schedule = optimizer_and_schedule(
            self.parameters(), self.recipe.optimizer, self.trainer.max_steps, scaled_loss=scaled
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_start(self) -> None:
        """A run resumed with a larger (or smaller) `trainer.max_steps` than its checkpoint's re-lays the
        decay from the resumed step (`LearningRateSchedule.extend`); a fresh run's schedule already ends
        there."""
        schedule = self.lr_schedulers().lr_lambdas[0]
        schedule.extend(self.trainer.global_step, self.trainer.max_steps)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if not clip_without_scaler(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
