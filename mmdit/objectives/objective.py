"""The recipe's `objective` section -> rectified flow or Gaussian diffusion, and which samplers each takes."""

from __future__ import annotations

from omegaconf import DictConfig

from mmdit.objectives.flow import RectifiedFlow
from mmdit.objectives.gaussian import GaussianDiffusion

FLOW_KEYS = ("time_sampling", "logit_mean", "logit_std", "shift")
DEFAULT_PREDICTION = {"flow": "velocity", "gaussian": "epsilon"}
GAUSSIAN_KEYS = ("steps", "learn_sigma")
SAMPLERS = {"flow": ("euler", "heun"), "gaussian": ("ddpm", "ddim")}


def build_objective(config: DictConfig) -> RectifiedFlow | GaussianDiffusion:
    """`objective.type` "flow" reads the flow keys, "gaussian" the Gaussian ones; both read `prediction`
    (default: velocity for flow, epsilon for Gaussian)."""
    if config.type not in DEFAULT_PREDICTION:
        raise ValueError(f"objective.type must be flow or gaussian, got {config.type!r}")
    prediction = config.prediction or DEFAULT_PREDICTION[config.type]
    if config.type == "flow":
        return RectifiedFlow(**{k: config[k] for k in FLOW_KEYS}, prediction=prediction)
    return GaussianDiffusion(**{k: config[k] for k in GAUSSIAN_KEYS}, prediction=prediction)


def check_sampler(objective_type: str, name: str) -> None:
    """An unknown sampler, or one of the other objective, is an error that lists the valid ones."""
    valid = SAMPLERS.get(objective_type, ())
    if name not in valid:
        raise KeyError(f"sampler {name!r} does not sample a {objective_type} objective; use one of {valid}")
