"""Rectified flow: straight paths from data (t = 0) to noise (t = 1), learnt by regressing the velocity.

x_t = (1 - t) * x0 + t * eps and the target is eps - x0, as in SD3 and diffusers (beware: SiT, LightningDiT
and flow_matching put data at t = 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmdit.model.tokens import masked_mean
from mmdit.objectives import schedules
from mmdit.objectives.objective import Noised, Objective, Predict, State
from mmdit.objectives.solvers import FLOW_SAMPLERS, FLOW_TRAJECTORIES
from mmdit.objectives.solvers.field import Velocity

MIN_TIME = 0.05  # the floor of t when an x0 prediction is turned into a velocity


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3's resolution shift t' = s t / (1 + (s - 1) t): s > 1 spends more time near noise, which larger
    images (more tokens carrying the same signal) need."""
    return shift * t / (1 + (shift - 1) * t)


def _broadcast(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over real tokens only. prediction, target: [B, N, F]; mask: [B, N] bool."""
    return masked_mean((prediction.float() - target.float()) ** 2, mask)


@dataclass(frozen=True)
class RectifiedFlow(Objective):
    """time_sampling: "logit_normal" (SD3's default: sigmoid of N(logit_mean, logit_std)) or "uniform";
    prediction: what the network outputs, "velocity" (eps - x0, SD3) or "x0" (the clean data, turned into a
    velocity (x_t - x0) / t for the loss and the samplers: JiT's x-prediction with a v-loss, which lets a
    token carry more pixel values than the model's width, as large patches in pixel space do);
    shift: the resolution shift applied to sampled training times and to the sampling schedule."""

    time_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    prediction: str = "velocity"
    samplers: ClassVar[tuple[str, ...]] = tuple(FLOW_SAMPLERS)
    schedules: ClassVar[tuple[str, ...]] = schedules.SCHEDULES
    kind: ClassVar[str] = "flow"

    def __post_init__(self) -> None:
        if self.prediction not in ("velocity", "x0"):
            raise ValueError(f"flow prediction must be velocity or x0, got {self.prediction!r}")
        if self.time_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"time_sampling must be logit_normal or uniform, got {self.time_sampling!r}")
        if self.shift <= 0:
            raise ValueError(f"shift must be positive, got {self.shift}")

    def sample_time(self, batch_size: int, device: torch.device | str = "cpu", generator=None) -> Tensor:
        """[B] training times in (0, 1)."""
        if self.time_sampling == "uniform":
            t = torch.rand(batch_size, device=device, generator=generator)
        else:
            normal = torch.randn(batch_size, device=device, generator=generator)
            t = torch.sigmoid(self.logit_mean + self.logit_std * normal)
        return shift_time(t, self.shift)

    def inverse_cdf(self, q: Tensor) -> Tensor:
        """The training times' quantile function before the shift: probability q -> time (0 -> 0, 1 -> 1)."""
        if self.time_sampling == "uniform":
            return q
        return torch.sigmoid(self.logit_mean + self.logit_std * torch.special.ndtri(q))

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x0, noise: [B, ...]; t: [B] -> x_t [B, ...]."""
        t = _broadcast(t, x0)
        return (1 - t) * x0 + t * noise

    def velocity(self, output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The network's output [B, ...] at x_t [B, ...], time t [B] -> the velocity it predicts. For x0
        prediction t is floored at MIN_TIME, so the division stays bounded near the data (as JiT does)."""
        if self.prediction == "velocity":
            return output
        return (x_t - output) / _broadcast(t.clamp_min(MIN_TIME), x_t)

    def clean_estimate(self, output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The network's output [B, ...] at x_t [B, ...], time t [B] -> its estimate of the clean data x0:
        the output itself for x0 prediction (unaffected by MIN_TIME), x_t − t·v for velocity prediction."""
        if self.prediction == "x0":
            return output
        return x_t - _broadcast(t, x_t) * output

    @staticmethod
    def target(x0: Tensor, noise: Tensor) -> Tensor:
        """The velocity dx_t/dt = eps - x0."""
        return noise - x0

    def draw_time(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_time(batch_size, generator=generator)

    def noise(self, x0: Tensor, noise: Tensor, time: Tensor) -> Noised:
        return Noised(x0, noise, self.add_noise(x0, noise, time), time, time)

    def loss(self, output: Tensor, sample: Noised, mask: Tensor) -> Tensor:
        """The velocity the output implies against the true one, eps - x0 (a v-loss for x0 prediction)."""
        velocity = self.velocity(output, sample.x_t, sample.time)
        return masked_mse(velocity, self.target(sample.x0, sample.noise), mask)

    def sample(
        self,
        predict: Predict,
        noise: State,
        steps: int,
        sampler: str,
        progress: Callable = iter,
        generator: torch.Generator | None = None,
        schedule: str = "uniform",
    ) -> State:
        """The ODE from t = 1 to 0 over `schedule(steps, kind=schedule)`; the samplers are deterministic (no
        generator)."""
        self.check_sampler(sampler)
        self.check_schedule(schedule)
        device = next(iter(noise.values())).device
        times = self.schedule(steps, device, schedule)
        return FLOW_SAMPLERS[sampler](self.velocity_field(predict), noise, times, progress)

    def trajectory(
        self, predict: Predict, noise: State, times: Tensor, sampler: str, progress: Callable = iter
    ) -> Iterator[State]:
        """The states the ODE passes through from `noise` at times[0] along `times` [steps + 1] with
        `sampler`: one yielded at each of times[1:]."""
        self.check_sampler(sampler)
        return FLOW_TRAJECTORIES[sampler](self.velocity_field(predict), noise, times, progress)

    def velocity_field(self, predict: Predict) -> Velocity:
        """The network's outputs as the velocity the solvers integrate."""

        def velocity(x: State, t: Tensor) -> State:
            return {s: self.velocity(out, x[s], t) for s, out in predict(x, t).items()}

        return velocity

    def schedule(self, steps: int, device: torch.device | str = "cpu", kind: str = "uniform") -> Tensor:
        """[steps + 1] float32 times from 1 (noise) down to 0 (data), shifted like the training times; kind:
        one of `mmdit.objectives.schedules.SCHEDULES`."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.check_schedule(kind)
        if kind == "quantile":
            times = schedules.quantile(steps, self.inverse_cdf)
        elif kind == "karras":
            times = schedules.karras(steps)
        else:
            times = schedules.uniform(steps)
        return shift_time(times, self.shift).float().to(device)
