"""One-step solvers: Euler (first order) and Heun (second order), the two of EDM."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from mmdit.objectives.objective import State
from mmdit.objectives.solvers.field import Velocity, advance, batch_size


def euler(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> State:
    """First order: one model call per step. times: [steps + 1], from noise to data."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        x = advance(x, velocity(x, t0.expand(batch_size(x))), t1 - t0)
    return x


def heun(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> State:
    """Second order (trapezoidal correction): two model calls per step, except the last step into t = 0,
    which is an Euler step (as in EDM), since the velocity at the data end is not needed."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        v0 = velocity(x, t0.expand(batch_size(x)))
        guess = advance(x, v0, t1 - t0)
        if t1 == 0:
            x = guess
            continue
        v1 = velocity(guess, t1.expand(batch_size(x)))
        x = advance(x, {s: (v0[s] + v1[s]) / 2 for s in x}, t1 - t0)
    return x
