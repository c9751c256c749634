"""Rectified flow (data at t = 0, noise at t = 1) and the Euler / Heun ODE samplers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from mmdit.objectives.flow import RectifiedFlow, masked_mse, shift_time
from mmdit.objectives.solvers import FLOW_SAMPLERS, dpmpp_2m, euler, heun

SAMPLERS = [euler, heun, dpmpp_2m]


# --- the path -------------------------------------------------------------------------------------------


def test_add_noise_endpoints():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 5, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    flow = RectifiedFlow()
    assert torch.equal(flow.add_noise(x0, noise, torch.zeros(4)), x0)
    assert torch.equal(flow.add_noise(x0, noise, torch.ones(4)), noise)
    mixed = flow.add_noise(x0, noise, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    assert torch.equal(mixed[0], x0[0])
    assert torch.equal(mixed[1], noise[1])
    assert_close(mixed[2], (x0[2] + noise[2]) / 2)
    assert_close(mixed[3], 0.75 * x0[3] + 0.25 * noise[3])


def test_target_is_the_time_derivative_of_the_path():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    flow, h = RectifiedFlow(), 1e-4
    for t in (0.1, 0.5, 0.9):
        t_plus, t_minus = (
            torch.full((3,), t + h, dtype=torch.float64),
            torch.full((3,), t - h, dtype=torch.float64),
        )
        derivative = (flow.add_noise(x0, noise, t_plus) - flow.add_noise(x0, noise, t_minus)) / (2 * h)
        assert_close(derivative, flow.target(x0, noise), atol=1e-8, rtol=1e-8)
    assert torch.equal(flow.target(x0, noise), noise - x0)


# --- time: shift, schedule, sampling ---------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_clean_estimate_recovers_the_data_from_a_perfect_output(prediction):
    """A network output that is exactly right gives back x0, also below MIN_TIME for x0 prediction (where
    the velocity is computed with a floored t, so x_t - t·v would miss x0)."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    t = torch.tensor([0.01, 0.5, 0.9])
    flow = RectifiedFlow(prediction=prediction)
    x_t = flow.add_noise(x0, noise, t)
    output = flow.target(x0, noise) if prediction == "velocity" else x0
    assert_close(flow.clean_estimate(output, x_t, t), x0)


def test_shift_time():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert_close(shift_time(t, 1.0), t)
    assert_close(shift_time(torch.tensor(0.5), 3.0), torch.tensor(0.75))
    for s in (0.5, 3.0, 6.0):
        shifted = shift_time(t, s)
        assert (shifted.diff() > 0).all(), "the shift must be strictly increasing"
        assert shifted[0] == 0 and shifted[-1] == 1
    assert (shift_time(t[1:-1], 3.0) > t[1:-1]).all()  # s > 1 moves times toward noise
    assert (shift_time(t[1:-1], 0.5) < t[1:-1]).all()
    # The SD3 formula is invertible by the shift 1 / s.
    assert_close(shift_time(shift_time(t, 3.0), 1 / 3.0), t)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 4, 28])
def test_schedule_runs_from_noise_to_data(steps, shift):
    times = RectifiedFlow(shift=shift).schedule(steps)
    assert times.shape == (steps + 1,)
    assert times[0] == 1.0 and times[-1] == 0.0
    assert (times.diff() < 0).all()
    assert_close(times, shift_time(torch.linspace(1, 0, steps + 1), shift))


def test_schedule_needs_a_step():
    with pytest.raises(ValueError):
        RectifiedFlow().schedule(0)


def test_logit_normal_times():
    g = torch.Generator().manual_seed(2)
    t = RectifiedFlow().sample_time(20000, generator=g)
    assert t.shape == (20000,)
    assert ((t > 0) & (t < 1)).all()
    assert abs(t.median().item() - 0.5) < 0.02
    # Quartiles of sigmoid(N(0, 1)) are sigmoid(+-0.6745): not uniform's 0.25 / 0.75.
    q1, q3 = torch.quantile(t, torch.tensor([0.25, 0.75])).tolist()
    assert abs(q1 - 1 / (1 + math.exp(0.6745))) < 0.01
    assert abs(q3 - 1 / (1 + math.exp(-0.6745))) < 0.01


def test_uniform_times_and_shifted_times():
    g = torch.Generator().manual_seed(3)
    t = RectifiedFlow(time_sampling="uniform").sample_time(20000, generator=g)
    assert ((t >= 0) & (t < 1)).all()
    assert abs(t.mean().item() - 0.5) < 0.01
    assert abs((t < 0.1).float().mean().item() - 0.1) < 0.01
    shifted = RectifiedFlow(shift=3.0).sample_time(20000, generator=torch.Generator().manual_seed(4))
    assert abs(shifted.median().item() - 0.75) < 0.02


def test_flow_validation():
    with pytest.raises(ValueError):
        RectifiedFlow(time_sampling="cosine")
    with pytest.raises(ValueError):
        RectifiedFlow(shift=0.0)


# --- loss ----------------------------------------------------------------------------------------------


def test_loss_ignores_padded_tokens():
    g = torch.Generator().manual_seed(5)
    prediction, target = torch.randn(2, 6, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    loss = masked_mse(prediction, target, mask)
    expected = torch.cat([(prediction - target)[0], (prediction - target)[1, :4]]).square().mean()
    assert_close(loss, expected)

    prediction2, target2 = prediction.clone(), target.clone()
    prediction2[1, 4:] = 1e3
    target2[1, 4:] = -1e3
    assert torch.equal(masked_mse(prediction2, target2, mask), loss)
    assert_close(
        masked_mse(prediction, target, torch.ones(2, 6, dtype=torch.bool)),
        F.mse_loss(prediction, target),
    )
    assert masked_mse(prediction, target, torch.zeros(2, 6, dtype=torch.bool)) == 0


# --- samplers ------------------------------------------------------------------------------------------


def integrate(method, velocity, x, steps):
    return method(velocity, x, torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64))


def identity_velocity(x, t):
    return {s: v.clone() for s, v in x.items()}


def linear_field_errors(method, steps):
    """dx/dt = x from t = 1 to t = 0: the exact end point is x(1) * e^-1."""
    x = {"a": torch.linspace(-2, 2, 7, dtype=torch.float64)[None, :, None]}
    out = integrate(method, identity_velocity, x, steps)
    return (out["a"] - x["a"] * math.exp(-1)).abs().max().item()


def test_euler_is_first_order():
    e20, e40 = linear_field_errors(euler, 20), linear_field_errors(euler, 40)
    assert e20 > 1e-3
    assert 1.8 < e20 / e40 < 2.2


def test_heun_is_second_order_and_beats_euler():
    e20, e40 = linear_field_errors(heun, 20), linear_field_errors(heun, 40)
    assert e20 < linear_field_errors(euler, 20) / 10
    assert 3.5 < e20 / e40 < 4.5


@pytest.mark.parametrize("method", SAMPLERS)
def test_constant_velocity_is_integrated_exactly(method):
    g = torch.Generator().manual_seed(6)
    x = {"a": torch.randn(2, 3, 4, generator=g, dtype=torch.float64), "b": torch.randn(2, 5, 1, generator=g)}
    velocity_field = {s: torch.randn(v.shape, generator=g, dtype=v.dtype) for s, v in x.items()}
    out = integrate(method, lambda x, t: velocity_field, x, 7)
    for s in x:
        # From t = 1 to t = 0 the state moves by -1 times the velocity.
        assert_close(out[s], x[s] - velocity_field[s])


@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 5])
def test_oracle_velocity_reaches_the_single_data_point(method, steps):
    """If all data is one point c, the exact velocity is (x_t - c) / t, constant along the straight path,
    so any number of steps lands on c (and no sampler may evaluate the velocity at t = 0)."""
    g = torch.Generator().manual_seed(7)
    c = torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    noise = {"a": torch.randn(5, 4, 3, generator=g, dtype=torch.float64)}
    seen = []

    def velocity(x, t):
        assert t.shape == (5,) and (t > 0).all()
        seen.append(float(t[0]))
        return {"a": (x["a"] - c) / t[:, None, None]}

    times = RectifiedFlow(shift=3.0).schedule(steps).double()
    out = method(velocity, noise, times)
    assert_close(out["a"], c.expand(5, -1, -1))
    assert seen[0] == 1.0


def test_model_call_counts():
    calls = []

    def velocity(x, t):
        calls.append(t)
        return identity_velocity(x, t)

    x = {"a": torch.ones(1, 1, 1)}
    euler(velocity, x, torch.linspace(1, 0, 11))
    assert len(calls) == 10
    calls.clear()
    heun(velocity, x, torch.linspace(1, 0, 11))
    assert len(calls) == 19  # two per step, one for the final step into t = 0


def test_sampler_registry():
    assert FLOW_SAMPLERS == {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m}
    assert RectifiedFlow().samplers == ("euler", "heun", "dpmpp_2m")
    with pytest.raises(
        KeyError, match="does not sample a flow objective; use one of \\('euler', 'heun', 'dpmpp_2m'\\)"
    ):
        RectifiedFlow().check_sampler("dpm")


def test_euler_takes_the_steps_of_diffusers_flow_match_scheduler():
    """Given diffusers' shifted sigmas, our Euler sampler visits the same states, and the model sees their
    timesteps (sigma * 1000) as t * 1000. (Their default schedule differs from ours: it ends at a shifted
    sigma_min and then jumps to 0, where ours spaces `steps` intervals evenly down to 0 before shifting.)"""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(8)

    def velocity(x, t):
        return {"x": torch.sin(3 * x["x"]) * t[:, None, None] + t[:, None, None] ** 2}

    start = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sample, seen = start.clone(), []
    for timestep in scheduler.timesteps:
        t = timestep.double().expand(2) / 1000
        seen.append(t[0].item())
        sample = scheduler.step(velocity({"x": sample}, t)["x"], timestep, sample).prev_sample
    ours = euler(velocity, {"x": start.clone()}, scheduler.sigmas.double())["x"]
    # Everything is float64 but their step, which rounds the sample to float32 before adding: one float32
    # rounding per step (eps / 2 of the scale) that the next steps carry, so 8 steps stay within 8 eps.
    bound = len(scheduler.timesteps) * torch.finfo(torch.float32).eps * sample.abs().max().item()
    assert sample.dtype == ours.dtype == torch.float64
    assert (ours - sample).abs().max().item() <= bound
    assert seen == pytest.approx(scheduler.sigmas[:-1].tolist(), abs=1e-6)  # float32 timesteps / 1000


def test_x0_prediction_gives_the_velocity_of_its_clean_estimate():
    flow = RectifiedFlow(prediction="x0")
    x0, noise = torch.randn(4, 6, 3), torch.randn(4, 6, 3)
    t = torch.tensor([1.0, 0.7, 0.2, 0.05])
    x_t = flow.add_noise(x0, noise, t)
    # A perfect clean estimate is the exact velocity target at every t >= MIN_TIME.
    assert_close(flow.velocity(x0, x_t, t), flow.target(x0, noise), atol=1e-5, rtol=1e-5)
    # Below MIN_TIME the division is floored, so the velocity stays bounded.
    tiny = torch.full((4,), 1e-4)
    assert flow.velocity(torch.zeros_like(x0), x0, tiny).abs().max() <= x0.abs().max() / 0.05 + 1e-4
    assert torch.equal(RectifiedFlow().velocity(noise, x_t, t), noise)  # velocity prediction passes through
    with pytest.raises(ValueError, match="x0"):
        RectifiedFlow(prediction="eps")


@pytest.mark.parametrize("method", ["euler", "heun", "dpmpp_2m"])
def test_x0_oracle_reaches_the_data_point(method):
    """An x0 predictor that always answers the one data point lands on it, whatever the steps."""
    flow = RectifiedFlow(prediction="x0")
    target = torch.randn(2, 5, 3)

    def velocity(x, t):
        return {"s": flow.velocity(target, x["s"], t)}

    out = FLOW_SAMPLERS[method](velocity, {"s": torch.randn(2, 5, 3)}, flow.schedule(4))
    assert_close(out["s"], target, atol=1e-5, rtol=1e-5)
