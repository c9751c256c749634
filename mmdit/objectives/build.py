"""The recipe's `objective` section -> its Objective. The section is tagged by `type`; each type's keys are
its schema in `mmdit.recipe` (FlowObjective, GaussianObjective), checked when the recipe loads."""

from __future__ import annotations

from omegaconf import DictConfig

from mmdit.objectives.flow import RectifiedFlow
from mmdit.objectives.gaussian import GaussianDiffusion
from mmdit.objectives.objective import Objective

OBJECTIVES: dict[str, type[Objective]] = {"flow": RectifiedFlow, "gaussian": GaussianDiffusion}
"""`objective.type` -> the class; each class lists its samplers (`Objective.samplers`)."""

NOT_OBJECTIVE_ARGUMENTS = ("type", "diffusion_weight")
"""Keys of the section read by the training module, not by the objective."""


def build_objective(config: DictConfig) -> Objective:
    """A checked `objective` section -> the objective, built from its type's keys."""
    if config.type not in OBJECTIVES:
        raise ValueError(f"objective.type must be one of {list(OBJECTIVES)}, got {config.type!r}")
    arguments = {k: v for k, v in config.items() if k not in NOT_OBJECTIVE_ARGUMENTS}
    return OBJECTIVES[config.type](**arguments)
