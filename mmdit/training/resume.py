"""What `mmdit fit --resume CKPT` checks before it builds anything: that CKPT is a Lightning checkpoint of
this recipe. A resumed run continues the run that saved it, so only the keys that do not change what a step
computes may differ (`RESUMABLE_CHANGES`): the run's length and devices (`trainer`), checkpoint cadence,
previews, evaluation, names and the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mmdit.recipe import from_yaml
from mmdit.training.optim import LearningRateSchedule

RESUMABLE_CHANGES = (
    "name",
    "description",
    "run_dir",
    "trainer.",
    "checkpoint.",
    "sample.",
    "eval.",
    "data.num_workers",
    "model.compile",
    "model.checkpointing",
)
"""Recipe keys (or prefixes, ending in '.') that a resumed run may set otherwise than its checkpoint."""


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested dict's leaves (lists are values)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix.rstrip("."): tree}
    return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}


def recipe_differences(stored: DictConfig, recipe: DictConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, recipe's value)} of the keys a resume may not change."""
    old, new = flat(OmegaConf.to_container(stored)), flat(OmegaConf.to_container(recipe))
    keys = sorted(set(old) | set(new))
    return {
        k: (old.get(k), new.get(k))
        for k in keys
        if old.get(k) != new.get(k) and not any(k == c or k.startswith(c) for c in RESUMABLE_CHANGES)
    }


def check_resume(recipe: DictConfig, path: str | Path) -> int:
    """Refuses, with a one-line message, a `--resume` file that is not a Lightning checkpoint of `recipe`,
    or whose learning-rate schedule cannot be extended to the recipe's `trainer.max_steps`; returns the
    optimizer step it holds. Read as tensors and plain data only (no code runs from it)."""
    path = Path(path)
    if path.suffix != ".ckpt":
        raise ValueError(
            f"--resume {path}: expected a Lightning .ckpt (a run's checkpoints/last.ckpt); "
            f"{path.suffix or 'a file without suffix'} holds no optimizer or loop state to resume"
        )
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        stored = from_yaml(json.dumps(checkpoint["hyper_parameters"]["recipe"]))
        step = int(checkpoint["global_step"])
        schedule_state = checkpoint["lr_schedulers"][0]["lr_lambdas"][0]  # {} before schedules had state
    except Exception as err:  # a truncated or foreign file: any reader error means the same to the user
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--resume {path} is not a readable mmdit checkpoint: {reason}") from None
    differences = recipe_differences(stored, recipe)
    if differences:
        shown = [f"{k} ({old!r} in the checkpoint, {new!r} now)" for k, (old, new) in differences.items()]
        more = f" and {len(shown) - 6} more" if len(shown) > 6 else ""
        raise ValueError(
            f"--resume {path} is a checkpoint of another recipe ({stored.name}): it differs in "
            f"{', '.join(shown[:6])}{more}; resume it with the recipe that trained it"
        )
    max_steps = recipe.trainer.get("max_steps", -1)
    if schedule_state and max_steps is not None and max_steps > step:
        LearningRateSchedule(**schedule_state).extend(step, max_steps)  # a cosine that reached 0 is refused
    return step
