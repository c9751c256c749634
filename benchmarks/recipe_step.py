"""One training step of a recipe's module outside Lightning, for the benchmarks that time or probe training:
the diffusion loss with the recipe's label dropout, backward, the recipe's gradient clipping, AdamW."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf

from mmdit.recipe import OptimizerConfig
from mmdit.training.module import DiffusionModule
from mmdit.training.optim import optimizer_and_schedule


def recipe_adamw(parameters) -> torch.optim.AdamW:
    """The AdamW a recipe's default `optimizer` section builds (`optimizer_and_schedule`: torch's fused AdamW
    where the parameters' device has it), for benchmarks that step a bare model."""
    return optimizer_and_schedule(parameters, OmegaConf.structured(OptimizerConfig), 1)[0]


def recipe_step(module: DiffusionModule, batch: Mapping[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Train `module` one step on `batch` as `mmdit fit` would with its recipe: under the autocast of
    `trainer.precision` (`module.precision_autocast`), clipping at `trainer.gradient_clip_val`."""
    recipe = module.recipe
    with module.precision_autocast():
        loss = module.total(module.task_losses(batch, module.tasks[0], recipe.conditioning.dropout))
    loss.backward()
    clip = recipe.trainer.get("gradient_clip_val")
    if clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
