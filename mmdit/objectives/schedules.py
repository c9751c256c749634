"""Sampling time schedules of rectified flow: [steps + 1] times from 1 (noise) down to 0 (data), before
the objective's resolution shift (which maps each of them; in EDM's noise level sigma = t / (1 - t) the
shift is the scaling sigma -> shift * sigma).

- uniform: evenly spaced times, the default (SD3's schedule once shifted);
- quantile: the training time distribution's quantiles at evenly spaced probabilities, so the steps fall
  where training spent its samples (Esser et al. 2024 sample logit-normal times in training);
- karras: EDM's schedule (Karras et al. 2022): noise levels sigma spaced evenly in sigma^(1/rho) from
  sigma_max down to sigma_min, then 0, mapped to flow time t = sigma / (1 + sigma); its first point is moved
  from sigma_max to infinity (t = 1), where the sampler's pure noise sits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SCHEDULES = ("uniform", "quantile", "karras")

KARRAS_SIGMA_MIN, KARRAS_SIGMA_MAX, KARRAS_RHO = 0.002, 80.0, 7.0  # EDM's values


def uniform(steps: int) -> Tensor:
    """[steps + 1] float64 times evenly spaced from 1 to 0."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def quantile(steps: int, inverse_cdf: Callable[[Tensor], Tensor]) -> Tensor:
    """[steps + 1] float64 times inverse_cdf(q) at q = 1, (steps - 1) / steps, ..., 0: every step spans the
    same share of the training time distribution. inverse_cdf must map 1 to 1 and 0 to 0."""
    return inverse_cdf(uniform(steps))


def karras(steps: int, rho: float = KARRAS_RHO) -> Tensor:
    """[steps + 1] float64 times: 1, then EDM's noise levels 2 .. steps of `steps` as flow times, then 0."""
    if steps == 1:
        return uniform(1)
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    high, low = KARRAS_SIGMA_MAX ** (1 / rho), KARRAS_SIGMA_MIN ** (1 / rho)
    sigmas = (high + ramp * (low - high)) ** rho
    times = sigmas / (1 + sigmas)
    times[0] = 1.0
    return torch.cat([times, torch.zeros(1, dtype=torch.float64)])
