"""The optimizer policy of every recipe: AdamW over the trainable parameters, linear warm-up then constant or
cosine decay, torch's fused AdamW where it can be used, and clipping under bf16-mixed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial

import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import DictConfig
from torch import nn


def learning_rate_factor(step: int, warmup: int, decay: str, total: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step`: linear warm-up over `warmup` steps, then
    constant, or a cosine decay that reaches 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


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
    factor = partial(learning_rate_factor, warmup=opt.warmup_steps, decay=opt.decay, total=total_steps)
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

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        if not clip_without_scaler(self.trainer, optimizer, gradient_clip_val, gradient_clip_algorithm):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
