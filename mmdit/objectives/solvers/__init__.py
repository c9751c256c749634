"""ODE solvers of rectified flow, by name. Each is a function (velocity, x, times, progress) -> x: it
integrates `velocity` (`field.Velocity`) over the state x = {stream: [B, N, F]} along `times` [steps + 1]
from noise (t = 1) to data (t = 0), so every modality and every set of streams shares them. Each is made
from a generator of the state after every step (`FLOW_TRAJECTORIES`), which trajectory distillation
records.

Model calls per sample (the network evaluations, NFE, before guidance doubles them): euler and dpmpp_2m
one per step; heun two per step but one for the last step into t = 0."""

from __future__ import annotations

from collections.abc import Callable

from mmdit.objectives.objective import State
from mmdit.objectives.solvers.dpm_solver import dpmpp_2m, dpmpp_2m_states
from mmdit.objectives.solvers.field import States
from mmdit.objectives.solvers.runge_kutta import euler, euler_states, heun, heun_states

FLOW_SAMPLERS: dict[str, Callable[..., State]] = {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m}
"""The ODE samplers of rectified flow by name (Gaussian diffusion's ddpm and ddim are its own steps)."""

FLOW_TRAJECTORIES: dict[str, States] = {
    "euler": euler_states,
    "heun": heun_states,
    "dpmpp_2m": dpmpp_2m_states,
}
"""The same solvers as generators of the state at each time after the first."""
