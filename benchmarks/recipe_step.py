"""One training step of a recipe's module outside Lightning, for the benchmarks that time or probe training:
the diffusion loss with the recipe's label dropout, backward, the recipe's gradient clipping, AdamW."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from mmdit.module import AUTOCAST_DTYPES, DiffusionModule


def recipe_step(
    module: DiffusionModule, batch: Mapping[str, Any], optimizer: torch.optim.Optimizer, recipe: DictConfig
) -> None:
    """Train `module` one step on `batch` as `mmdit fit` would: under the autocast of the recipe's
    `trainer.precision` (bf16-mixed / 16-mixed; none for 32), clipping at `trainer.gradient_clip_val`."""
    dtype = AUTOCAST_DTYPES.get(str(recipe.trainer.get("precision", "32-true")))
    with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
        loss = sum(module.diffusion_loss(batch, recipe.conditioning.dropout).values())
    loss.backward()
    clip = recipe.trainer.get("gradient_clip_val")
    if clip:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
