"""One-step solvers: Euler (first order) and Heun (second order), the two of EDM."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor

from mmdit.objectives.objective import State
from mmdit.objectives.solvers.field import Velocity, advance, batch_size, final_state


def euler_states(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> Iterator[State]:
    """First order: one model call per step. times: [steps + 1], from noise to data; yields the state at
    each of times[1:]."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        x = advance(x, velocity(x, t0.expand(batch_size(x))), t1 - t0)
        yield x


def heun_states(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> Iterator[State]:
    """Second order (trapezoidal correction): two model calls per step, except the last step into t = 0,
    which is an Euler step (as in EDM), since the velocity at the data end is not needed. Yields the state
    at each of times[1:]."""
    for t0, t1 in progress(list(zip(times[:-1], times[1:], strict=True))):
        v0 = velocity(x, t0.expand(batch_size(x)))
        guess = advance(x, v0, t1 - t0)
        if t1 == 0:
            x = guess
        else:
            v1 = velocity(guess, t1.expand(batch_size(x)))
            x = advance(x, {s: (v0[s] + v1[s]) / 2 for s in x}, t1 - t0)
        yield x


euler = final_state(euler_states)
heun = final_state(heun_states)
