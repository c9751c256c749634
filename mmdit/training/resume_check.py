"""`mmdit fit --resume CKPT`, checked before Lightning reads the file: it must be a Lightning checkpoint
(not an export), readable as tensors and plain data, of a model with this recipe's weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmdit.errors import UserError
from mmdit.weights_files import lightning_checkpoint, state_dict_mismatch

MODEL_SECTIONS = ("streams", "tasks", "conditioning", "model", "objective", "autoencoder")
"""The recipe sections that decide a model's weights, where a differing key explains a mismatch."""

SHOWN = 5
"""Differing recipe keys a message names at most."""


def check_resume(path: str | Path, recipe: DictConfig, module: L.LightningModule) -> None:
    """Refuse `path` as a resume point of `module` (built from `recipe`): a `.safetensors` export, a file
    that is no Lightning checkpoint of `mmdit fit`, or one whose weights do not fit (naming the recipe
    keys that differ)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        raise UserError(
            f"--resume {path}: resuming needs a Lightning .ckpt (a run's checkpoints/last.ckpt), which holds "
            "the optimizer and step; a .safetensors export holds weights only, for mmdit sample / eval"
        )
    checkpoint = lightning_checkpoint(path)
    mismatch = state_dict_mismatch(module.state_dict(), checkpoint["state_dict"])
    if mismatch is None:
        return
    stored = checkpoint["hyper_parameters"]["recipe"]
    differing = recipe_differences(stored, OmegaConf.to_container(recipe, resolve=True))
    shown = ", ".join(differing[:SHOWN]) + (
        f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else ""
    )
    raise UserError(
        f"--resume {path} is a checkpoint of another model (recipe {stored.get('name')!r}): "
        + (f"recipe keys that differ: {shown}" if differing else f"weights: {mismatch}")
    )


def recipe_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys of `MODEL_SECTIONS` whose values differ between two recipes (as plain containers)."""
    flat_stored, flat_current = _flatten(stored, MODEL_SECTIONS), _flatten(current, MODEL_SECTIONS)
    keys = sorted(set(flat_stored) | set(flat_current))
    return [k for k in keys if flat_stored.get(k) != flat_current.get(k)]


def _flatten(tree: Mapping[str, Any], sections: tuple[str, ...]) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}")
        else:
            flat[prefix] = node

    for section in sections:
        walk(tree.get(section), section)
    return flat
