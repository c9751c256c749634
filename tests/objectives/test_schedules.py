"""Sampling time schedules of rectified flow: endpoints, monotonicity, and what each is defined to be."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from mmdit.objectives import schedules
from mmdit.objectives.flow import RectifiedFlow, shift_time


@pytest.mark.parametrize("kind", schedules.SCHEDULES)
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 2, 7, 60])
def test_every_schedule_runs_from_noise_to_data_strictly_down(kind, shift, steps):
    times = RectifiedFlow(shift=shift).schedule(steps, kind=kind)
    assert times.shape == (steps + 1,) and times.dtype == torch.float32
    assert times[0] == 1.0 and times[-1] == 0.0
    assert (times.diff() < 0).all()


def test_quantiles_are_the_training_distributions_inverse_cdf():
    """Each time t_i of the quantile schedule has training-time CDF F(t_i) = 1 - i / steps, shift included:
    exactly through the logit-normal's CDF, and empirically through `sample_time`'s draws."""
    flow = RectifiedFlow(logit_mean=0.3, logit_std=1.2, shift=3.0)
    steps = 8
    times = flow.schedule(steps, kind="quantile").double()
    unshifted = shift_time(times[1:-1], 1 / 3.0)
    cdf = torch.special.ndtr((torch.logit(unshifted) - 0.3) / 1.2)
    assert_close(cdf, 1 - torch.arange(1, steps, dtype=torch.float64) / steps, atol=1e-6, rtol=0)
    draws = flow.sample_time(200_000, generator=torch.Generator().manual_seed(0)).double()
    empirical = (draws[None, :] <= times[1:-1, None]).double().mean(1)
    assert_close(empirical, cdf, atol=4e-3, rtol=0)


def test_quantiles_of_uniform_training_times_are_the_uniform_schedule():
    flow = RectifiedFlow(time_sampling="uniform", shift=2.0)
    assert_close(flow.schedule(9, kind="quantile"), flow.schedule(9, kind="uniform"))


def test_karras_is_edm_noise_levels_as_flow_times():
    """Noise levels sigma = t / (1 - t) of points 1 .. steps - 1 are EDM's sigma_i, evenly spaced in
    sigma^(1/7) from 80 to 0.002; the first point is t = 1, the last 0."""
    steps = 6
    times = schedules.karras(steps)
    sigmas = times[1:-1] / (1 - times[1:-1])
    i = torch.arange(1, steps, dtype=torch.float64)
    edm = (80 ** (1 / 7) + i / (steps - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert_close(sigmas, edm)
    assert times[-2] == pytest.approx(0.002 / 1.002)
    # The shift scales the noise level: sigma' = shift * sigma.
    shifted = RectifiedFlow(shift=3.0).schedule(steps, kind="karras").double()
    assert_close(shifted[1:-1] / (1 - shifted[1:-1]), 3.0 * sigmas, rtol=1e-5, atol=0)


def test_unknown_schedule_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"use one of \('uniform', 'quantile', 'karras'\)"):
        RectifiedFlow().schedule(4, kind="cosine")
