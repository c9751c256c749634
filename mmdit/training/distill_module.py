"""The student of a distillation recipe (`distill:`): a DiffusionModule, started from the teacher's weights,
trained so that ONE Euler step from each state of a guided teacher trajectory, recorded at the student's
times t_0 = 1 > t_1 > ... > t_K = 0 (its `sample.steps` over `sample.schedule`), lands on the teacher's
next state:

    v_target(x_k, t_k) = (x_{k+1} - x_k) / (t_{k+1} - t_k),

with the teacher's labels and no guidance. Its samples are then `sample.steps` Euler steps at cfg 1, K NFE,
and its export is an ordinary DiffusionModule export. The trajectories come from
`mmdit.training.trajectories`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmdit.contract import Tokens
from mmdit.objectives.flow import masked_mse
from mmdit.training.module import DiffusionModule


def euler_targets(states: Tensor, times: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """states [B, K + 1, N, F] of B trajectories at times [K + 1] -> the student's inputs x [B·K, N, F]
    (the states before each step, item-major), their times [B·K], and the velocities [B·K, N, F] whose one
    Euler step reaches each next state."""
    batch, points = states.shape[:2]
    if len(times) != points:
        raise ValueError(f"trajectories of {points} states for {len(times)} student times")
    dt = (times[1:] - times[:-1]).to(states)
    x = states[:, :-1]
    velocity = (states[:, 1:] - x) / dt.reshape(1, -1, *([1] * (states.ndim - 2)))
    return x.flatten(0, 1), times[:-1].repeat(batch), velocity.flatten(0, 1)


class DistillModule(DiffusionModule):
    """The student: recipe, classes and adapters as DiffusionModule's (the recipe with its `distill`
    section); batches of `mmdit.training.trajectories.TrajectoryDataset` items."""

    def __init__(self, recipe, classes, adapters):
        super().__init__(recipe, classes, adapters)
        where = f"recipe {self.recipe.name!r}"
        if self.recipe.distill is None:
            raise ValueError(f"{where} has no distill section: train it with DiffusionModule")
        if self.objective.kind != "flow":
            raise ValueError(
                f"{where}: distillation follows the flow ODE; the objective is {self.objective.kind}"
            )
        if self.recipe.tasks or self.discrete:
            raise ValueError(
                f"{where}: distillation takes label-conditioned recipes of one task, no tasks or text"
            )
        sample = self.recipe.sample
        if sample.sampler != "euler" or sample.cfg != 1.0:
            raise ValueError(
                f"{where}: the student is trained for Euler steps without guidance; set sample.sampler=euler "
                f"and sample.cfg=1 (got {sample.sampler}, cfg {sample.cfg})"
            )

    def student_times(self, device: torch.device | str = "cpu") -> Tensor:
        """[sample.steps + 1] times the student samples at (and is trained at), 1 down to 0."""
        sample = self.recipe.sample
        return self.objective.schedule(sample.steps, device, sample.schedule)

    def distillation_loss(self, batch: Mapping[str, Any]) -> Tensor:
        """The mean squared error of the student's velocity at every recorded state of the batch's
        trajectories against `euler_targets`, summed over the streams."""
        times = self.student_times(self.device)
        steps = len(times) - 1
        inputs, targets, t = {}, {}, None
        for stream, part in batch["trajectory"].items():
            x, t, targets[stream] = euler_targets(part["x"], times)
            pos, mask = (part[k].repeat_interleave(steps, dim=0) for k in ("pos", "mask"))
            inputs[stream] = Tokens(x, pos, mask)
        labels = {k: v.repeat_interleave(steps) for k, v in batch["labels"].items()}
        numbers = {k: v.repeat_interleave(steps) for k, v in batch.get("numbers", {}).items()}
        out = self.model(inputs, t, labels, numbers=self.conditioning_numbers(numbers))
        losses = [
            masked_mse(self.objective.velocity(out[s], inputs[s].x, t), targets[s], inputs[s].mask)
            for s in inputs
        ]
        return sum(losses[1:], losses[0])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss = self.distillation_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"distillation loss is {loss.item()} at step {self.global_step}: lower optimizer.lr"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.log("val/loss", self.distillation_loss(batch), prog_bar=True, sync_dist=True)
