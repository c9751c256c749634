"""What every flow solver integrates: a velocity field over a state {stream: x [B, N, F]}, so that several
streams are integrated together and every modality is served by the same solvers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

from torch import Tensor

from mmdit.objectives.objective import State

Velocity = Callable[[State, Tensor], State]
"""({stream: x [B, N, F]}, time t [B]) -> {stream: dx/dt [B, N, F]}; t = 1 is noise, t = 0 data."""

States = Callable[..., Iterator[State]]
"""A solver as a generator: (velocity, x, times [steps + 1], progress) -> the state at each of times[1:]."""


def advance(x: State, direction: State, dt: Tensor) -> State:
    """x + dt * direction, stream by stream."""
    return {s: x[s] + dt * direction[s] for s in x}


def batch_size(x: State) -> int:
    return next(iter(x.values())).shape[0]


def clean_estimate(x: State, v: State, t: Tensor) -> State:
    """The data point x0 = x_t - t * v the velocity points at along the straight path x_t = (1 - t) x0 + t eps
    (t a scalar tensor): what the data-prediction solvers extrapolate."""
    return {s: x[s] - t * v[s] for s in x}


def final_state(states: States) -> Callable[..., State]:
    """The solver that returns only the state at times[-1], from one that yields every step's (the states
    in between are what trajectory distillation records)."""

    @functools.wraps(states)
    def solve(velocity: Velocity, x: State, times: Tensor, progress: Callable = iter) -> State:
        *_, last = states(velocity, x, times, progress)
        return last

    return solve
