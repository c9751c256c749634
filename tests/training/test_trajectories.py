"""Teacher trajectories: the times the teacher integrates along, and states recorded at the student's times
that are the ODE's own (a Gaussian's flow, whose exact solution is known)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from mmdit.objectives import schedules
from mmdit.objectives.flow import RectifiedFlow, shift_time
from mmdit.training.distill_module import euler_targets
from mmdit.training.trajectories import TrajectoryRecorder, recorded_times


def test_a_nested_student_schedule_adds_no_teacher_time():
    student, teacher = schedules.uniform(2), schedules.uniform(16)
    times, keep = recorded_times(student, teacher)
    assert torch.equal(times, teacher) and keep == [0, 8, 16]


def test_student_times_are_put_into_the_teachers_schedule():
    student, teacher = shift_time(schedules.uniform(4), 3.0), schedules.karras(8)
    times, keep = recorded_times(student, teacher)
    assert (times[1:] < times[:-1]).all() and (times[0], times[-1]) == (1.0, 0.0)
    assert torch.equal(times[keep], student)
    assert len(times) == 9 + 3  # karras' 9 times with the student's 3 inner ones (1 and 0 are shared)


# Data x0 ~ N(mu, sigma^2): the flow's marginals are N((1 - t) mu, s(t)^2) with
# s(t) = sqrt((1 - t)^2 sigma^2 + t^2), and the ODE carries noise eps at t = 1 along
# x_t = (1 - t) mu + s(t) eps: a velocity field linear in x.
MU, SIGMA = 0.8, 0.5


def spread(t: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((1 - t) ** 2 * SIGMA**2 + t**2)


def gaussian_velocity(x: dict, t: torch.Tensor) -> dict:
    t = t[:, None, None].double()
    slope = (t - (1 - t) * SIGMA**2) / spread(t) ** 2
    return {"a": -MU + slope * (x["a"] - (1 - t) * MU)}


def exact(noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (1 - t) * MU + spread(t) * noise


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "heun"])
def test_the_distillation_target_is_the_exact_ode_step(sampler):
    student = shift_time(schedules.uniform(4), 3.0)
    times, keep = recorded_times(student, schedules.uniform(256))
    noise = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    recorder = TrajectoryRecorder(RectifiedFlow(), sampler, times, keep)
    end = recorder(gaussian_velocity, {"a": noise}, None)
    states = recorder.kept["a"]
    assert states.shape == (3, 5, 5, 2) and torch.equal(states[:, 0], noise)
    assert torch.equal(states[:, -1], end["a"])
    x, t, velocity = euler_targets(states, student)
    chord = torch.stack(
        [
            (exact(noise, b) - exact(noise, a)) / (b - a)
            for a, b in zip(student[:-1], student[1:], strict=True)
        ],
        1,
    )
    # Second order at 256 steps: the states are the exact ones to 3e-4 (the first-order last step into t = 0
    # included), so the chords, over steps of 0.1 and more, to 1e-3.
    assert_close(states, torch.stack([exact(noise, t) for t in student], 1), atol=3e-4, rtol=0)
    assert_close(velocity, chord.flatten(0, 1), atol=1e-3, rtol=0)
    assert torch.equal(t, student[:-1].repeat(3))
    # The target is the chord of the curved path, not the field's velocity at the step's start.
    instantaneous = gaussian_velocity({"a": x}, t)["a"]
    assert (instantaneous - chord.flatten(0, 1)).abs().max() > 0.05
    # One Euler step with it lands on the next recorded state.
    dt = (student[1:] - student[:-1]).repeat(3)[:, None, None]
    assert_close(x + dt * velocity, states[:, 1:].flatten(0, 1), atol=1e-12, rtol=0)
