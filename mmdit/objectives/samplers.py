"""ODE samplers for rectified flow. A state is a dict {stream: [B, N, F]} so that several streams are
integrated together; `velocity(x, t)` takes such a dict and a [B] time and returns one."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from mmdit.objectives.objective import State

Velocity = Callable[[State, Tensor], State]


def _step(x: State, v: State, dt: Tensor) -> State:
    return {s: x[s] + dt * v[s] for s in x}


def euler(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> State:
    """First order: one model call per step. times: [steps + 1], from noise to data."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        x = _step(x, velocity(x, t0.expand(_batch(x))), t1 - t0)
    return x


def heun(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> State:
    """Second order (trapezoidal correction): two model calls per step, except the last step into t = 0,
    which is an Euler step (as in EDM), since the velocity at the data end is not needed."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        v0 = velocity(x, t0.expand(_batch(x)))
        guess = _step(x, v0, t1 - t0)
        if t1 == 0:
            x = guess
            continue
        v1 = velocity(guess, t1.expand(_batch(x)))
        x = _step(x, {s: (v0[s] + v1[s]) / 2 for s in x}, t1 - t0)
    return x


def _batch(x: State) -> int:
    return next(iter(x.values())).shape[0]


FLOW_SAMPLERS: dict[str, Callable[..., State]] = {"euler": euler, "heun": heun}
"""The ODE samplers of rectified flow by name (Gaussian diffusion's ddpm and ddim are its own steps)."""
