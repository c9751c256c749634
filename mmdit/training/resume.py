"""What `mmdit fit --resume CKPT` checks before it builds anything: that CKPT is a Lightning checkpoint of
this recipe. A resumed run continues the run that saved it, so only the keys that do not change what a step
computes may differ (`RESUMABLE_CHANGES`): the run's length and devices (`trainer`), checkpoint cadence,
previews, evaluation, names and the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmdit.errors import UserError
from mmdit.recipe import from_yaml
from mmdit.training.optim import LearningRateSchedule
from mmdit.weights_files import lightning_checkpoint

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
    if path.suffix == ".safetensors":
        raise UserError(
            f"--resume {path}: resuming needs a Lightning .ckpt (a run's checkpoints/last.ckpt), which holds "
            "the optimizer and loop state; a .safetensors export holds weights only, for mmdit sample / eval"
        )
    checkpoint = lightning_checkpoint(path)  # tensors and plain data only: no code runs from it
    try:
        stored = from_yaml(json.dumps(checkpoint["hyper_parameters"]["recipe"]))
        step = int(checkpoint["global_step"])
        schedulers = checkpoint.get("lr_schedulers") or [{}]
        schedule_state = (schedulers[0].get("lr_lambdas") or [{}])[0]  # {}: a schedule without state
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise UserError(f"--resume {path} is not a checkpoint of `mmdit fit`: no {err}") from None
    differences = recipe_differences(stored, recipe)
    if differences:
        shown = [f"{k} ({old!r} in the checkpoint, {new!r} now)" for k, (old, new) in differences.items()]
        more = f" and {len(shown) - 6} more" if len(shown) > 6 else ""
        raise UserError(
            f"--resume {path} is a checkpoint of another recipe ({stored.name}): it differs in "
            f"{', '.join(shown[:6])}{more}; resume it with the recipe that trained it"
        )
    max_steps = recipe.trainer.get("max_steps", -1)
    if schedule_state and max_steps is not None and max_steps > step:
        LearningRateSchedule(**schedule_state).extend(step, max_steps)  # a cosine that reached 0 is refused
    return step
