"""Each flow solver integrates a known linear ODE to its order's accuracy: halving the step divides the
error by 2^order (float64)."""

from __future__ import annotations

import pytest
import torch

from mmdit.objectives.solvers import FLOW_SAMPLERS

ORDERS = {"euler": 1, "heun": 2, "dpmpp_2m": 2}

# dx/dt = x A^T, a rotation with growth: from t = a to b the exact solution is x(b) = x(a) exp((b - a) A)^T.
A = torch.tensor([[0.5, 1.5], [-1.5, 0.5]], dtype=torch.float64)


def error(method: str, steps: int, start_time: float = 0.9, end_time: float = 0.1) -> float:
    start = torch.linspace(-2, 2, 12, dtype=torch.float64).reshape(2, 3, 2)
    times = torch.linspace(start_time, end_time, steps + 1, dtype=torch.float64)
    out = FLOW_SAMPLERS[method](lambda x, t: {"a": x["a"] @ A.T}, {"a": start.clone()}, times)
    exact = start @ torch.linalg.matrix_exp((end_time - start_time) * A).T
    return (out["a"] - exact).abs().max().item()


def test_every_registered_solver_has_a_stated_order():
    assert set(ORDERS) == set(FLOW_SAMPLERS)


@pytest.mark.parametrize("method", list(ORDERS))
def test_convergence_ratio_is_two_to_the_order(method):
    """Inside (0, 1), where DPM-Solver's log-SNR steps are finite and shrink with the step (at t = 1 and 0
    they are infinite, which makes the start and end steps first order and the ratio reach 4 only slowly)."""
    coarse, fine = error(method, 24), error(method, 48)
    ratio, expected = coarse / fine, 2 ** ORDERS[method]
    assert coarse > 1e-6, "the ODE must not be integrated exactly, or the ratio means nothing"
    assert 0.85 * expected < ratio < 1.2 * expected, f"{method}: error ratio {ratio:.2f}"


@pytest.mark.parametrize("method", ["heun", "dpmpp_2m"])
def test_second_order_solvers_converge_from_noise_to_data(method):
    """Over the whole path, 1 -> 0, the second-order solvers beat Euler by far at equal steps."""
    assert error(method, 48, 1.0, 0.0) < error("euler", 48, 1.0, 0.0) / 10


def test_dpmpp_2m_takes_the_steps_of_diffusers_multistep_dpm_solver():
    """diffusers' DPMSolverMultistepScheduler in flow mode (dpmsolver++, order 2, first-order final step into
    sigma = 0) visits the states ours does on its sigmas: an independent implementation of the same method."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        flow_shift=3.0,
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    scheduler.set_timesteps(8)

    def velocity(x, t):
        return {"x": torch.sin(x["x"] @ A.T) + t[:, None, None]}

    start = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    theirs = start.clone()
    for i, timestep in enumerate(scheduler.timesteps):
        t = scheduler.sigmas[i].double().expand(2)
        theirs = scheduler.step(velocity({"x": theirs}, t)["x"], timestep, theirs).prev_sample
    ours = FLOW_SAMPLERS["dpmpp_2m"](velocity, {"x": start.clone()}, scheduler.sigmas.double())["x"]
    # Their sigmas and coefficients are float32: a float32 rounding per step, carried on.
    bound = len(scheduler.timesteps) * torch.finfo(torch.float32).eps * theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() <= bound
