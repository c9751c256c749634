"""DPM-Solver++(2M) (Lu et al. 2022) for rectified flow: the second-order multistep solver in data
prediction, one model call per step.

On the path x_t = (1 - t) x0 + t eps (alpha_t = 1 - t, sigma_t = t), with half-log-SNR
lambda = log((1 - t) / t), the ODE's exact solution from s to t is

    x_t = (t / s) x_s + t * integral over kappa = (1 - t) / t of x0_hat,

and DPM-Solver++ approximates x0_hat linearly in lambda from the last two steps. Its first-order step
x_t = (t / s) x_s + (1 - t / s) x0_hat(s) is DDIM, which on this path is exactly the Euler step. The first
step (no history) and the step into t = 0 (lambda = infinity; the exact end point is x0_hat itself) are
first order, as in DPM-Solver++'s lower-order start and end; so is the second step when the first started at
t = 1 (lambda = -infinity makes the previous interval infinite and its extrapolation weight 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from torch import Tensor

from mmdit.objectives.objective import State
from mmdit.objectives.solvers.field import Velocity, batch_size, clean_estimate, final_state


def half_log_snr(t: float) -> float:
    """lambda(t) = log((1 - t) / t): -inf at t = 1 (noise), +inf at t = 0 (data)."""
    if t == 0:
        return math.inf
    return -math.inf if t == 1 else math.log((1 - t) / t)


def dpmpp_2m_states(
    velocity: Velocity, x: State, times: Tensor, progress: Callable = iter
) -> Iterator[State]:
    """One model call per step; times: [steps + 1] from noise (t = 1) down to data (t = 0). Yields the state
    at each of times[1:]."""
    values = times.tolist()
    previous: State | None = None  # x0_hat of the step before
    previous_interval = math.inf  # its lambda interval
    for i in progress(range(len(values) - 1)):
        s, t = values[i], values[i + 1]
        x0_hat = clean_estimate(x, velocity(x, times[i].expand(batch_size(x))), times[i])
        interval = half_log_snr(t) - half_log_snr(s)
        target = x0_hat
        if previous is not None and t > 0:
            weight = interval / (2 * previous_interval)  # 1 / (2 r); 0 after an infinite interval
            target = {k: x0_hat[k] + weight * (x0_hat[k] - previous[k]) for k in x}
        x = {k: (t / s) * x[k] + (1 - t / s) * target[k] for k in x}
        previous, previous_interval = x0_hat, interval
        yield x


dpmpp_2m = final_state(dpmpp_2m_states)
