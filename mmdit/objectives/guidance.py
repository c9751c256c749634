"""Classifier-free guidance: out = out_uncond + scale * (out_cond - out_uncond). The unconditional branch is
what condition dropout trains on: the null label (index num_classes) for every label, and the empty value
(`DiscreteAdapter.empty`) for every prompt stream. The output is whatever the network predicts (a velocity,
or an ε / v / x0 prediction); the objective turns it into a step.

Guidance can be limited to an interval of model time (Kynkäänniemi et al. 2024, "Applying Guidance in a
Limited Interval": guidance near pure noise costs diversity, near the data it does little) and its scale
can follow a schedule over time (`GuidanceSchedule`); outside the interval, or where the scale is 1, the
network runs once, on the conditional branch only.

NFE (network function evaluations per sample) is counted as the literature does: one per conditional
call, two per guided call, although both branches of a guided call run as one batch of 2B."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mmdit.model.backbone import MMDiT
from mmdit.model.masks import role_structure
from mmdit.model.tokens import Tokens
from mmdit.objectives.objective import Predict, State

SCALE_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class GuidanceSchedule:
    """The guidance scale at each model time t [B] (1 = unguided; t = 1 is noise, 0 the data).

    scale: the recipe's cfg; interval: (lo, hi), guidance only for lo <= t <= hi (default always);
    shape: "constant" (scale everywhere in the interval) or "linear", the guidance strength (scale - 1)
    rising linearly from 0 at t = 1 to twice its constant value at t = 0, the same mean over t (the
    increasing "linear" schedule of Wang et al. 2024, "Analysis of Classifier-Free Guidance Weight
    Schedulers")."""

    scale: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    shape: str = "constant"

    def __post_init__(self) -> None:
        if len(self.interval) != 2:
            raise ValueError(f"guidance_interval must be [lo, hi], got {list(self.interval)}")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must satisfy 0 <= lo <= hi <= 1, got {list(self.interval)}")
        if self.shape not in SCALE_SCHEDULES:
            raise ValueError(f"cfg_schedule must be one of {SCALE_SCHEDULES}, got {self.shape!r}")

    def scale_at(self, t: Tensor) -> Tensor:
        """Model times [B] -> the guidance scale [B] (float32), exactly 1 outside the interval."""
        t = t.float()
        strength = torch.full_like(t, self.scale - 1.0)
        if self.shape == "linear":
            strength = strength * 2 * (1 - t)
        lo, hi = self.interval
        return torch.where((t >= lo) & (t <= hi), 1.0 + strength, torch.ones_like(t))


@dataclass
class EvaluationCount:
    """Network evaluations per sample (NFE) that a predictor has made: 1 per conditional call, 2 per guided
    call."""

    nfe: int = 0


def null_labels(model: MMDiT, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The null class for every label key, same shape as `labels`."""
    return {k: torch.full_like(v, model.label_embedders[k].null_index) for k, v in labels.items()}


def twice(tokens: Tokens) -> Tokens:
    """A batch stacked on itself, [2B, ...]: the conditional and unconditional halves of guidance."""
    return Tokens(tokens.x.repeat(2, 1, 1), tokens.pos.repeat(2, 1, 1), tokens.mask.repeat(2, 1))


def _stacked(first: Tokens, second: Tokens) -> Tokens:
    return Tokens(
        torch.cat([first.x, second.x]),
        torch.cat([first.pos, second.pos]),
        torch.cat([first.mask, second.mask]),
    )


def guided_prediction(
    model: MMDiT,
    layouts: Mapping[str, Tokens],
    labels: Mapping[str, Tensor],
    scale: float = 1.0,
    numbers: Mapping[str, Tensor] | None = None,
    guided_features: Mapping[str, Tensor] | None = None,
    conditions: Mapping[str, Tokens] | None = None,
    unconditional: Mapping[str, Tokens] | None = None,
    roles: Mapping[str, str] | None = None,
    interval: tuple[float, float] = (0.0, 1.0),
    scale_schedule: str = "constant",
    count: EvaluationCount | None = None,
) -> Predict:
    """The network as the samplers call it: {stream: x [B, N, F]}, model time [B] -> {stream: [B, N, F_out]}
    for the generated streams.

    layouts: the generated streams' positions and masks; labels [B] and numbers [B] (seconds, ...) condition
    them; conditions: clean streams given at model time 0 (a prompt, another medium), with `unconditional`
    replacing some of them in the unconditional branch (the empty prompt); roles: every stream's role, for
    the attention structure when more than one stream takes part. A call whose times all lie outside the
    guidance `interval`, or where the `scale_schedule` gives scale 1, runs the network once on the
    conditional branch, as scale 1 would; otherwise both halves run as one batch of 2B, both with the
    numbers (they describe the item's extent, which guidance must not change), and items of the batch
    outside the interval keep their conditional output. guided_features: {stream: [F_out] bool}, the output
    features guidance applies to (the rest keep the conditional output: a learned variance, or DiT's
    unguided fourth latent channel); default all. count: incremented by each call's NFE."""
    numbers, conditions, unconditional = (
        dict(numbers or {}),
        dict(conditions or {}),
        dict(unconditional or {}),
    )
    schedule = GuidanceSchedule(scale, tuple(interval), scale_schedule)
    count = EvaluationCount() if count is None else count
    droppable = bool(labels) or bool(unconditional)
    order = [s for s in model.specs if s in layouts or s in conditions]
    nulls = null_labels(model, labels)
    both = {  # the conditional and unconditional branches stacked, [2B, ...]
        "layouts": {s: twice(tok) for s, tok in layouts.items()},
        "conditions": {s: _stacked(tok, unconditional.get(s, tok)) for s, tok in conditions.items()},
        "labels": {k: torch.cat([v, nulls[k]]) for k, v in labels.items()},
        "numbers": {k: v.repeat(2) for k, v in numbers.items()},
    }
    single = {"layouts": layouts, "conditions": conditions, "labels": labels, "numbers": numbers}

    def call(inputs: dict, x: State, t: Tensor) -> dict[str, Tensor]:
        given = inputs["conditions"]
        streams = {s: given[s] if s in given else inputs["layouts"][s].with_x(x[s]) for s in order}
        if not given:
            return model(streams, t, inputs["labels"], numbers=inputs["numbers"])
        times = {s: torch.zeros_like(t) if s in given else t for s in order}
        structure = role_structure(streams, roles) if roles is not None else None
        return model(
            streams,
            times,
            inputs["labels"],
            numbers=inputs["numbers"],
            structure=structure,
            clean=list(given),
        )

    def predict(x: State, t: Tensor) -> State:
        # Outputs take the state's dtype: under autocast (sampling in bf16) the network's come out in bf16,
        # and the guidance mix and the sampler's steps should not.
        scales = schedule.scale_at(t)
        guided = scales != 1.0
        if not (droppable and guided.any()):
            count.nfe += 1
            out = call(single, x, t)
            return {s: out[s].to(x[s].dtype) for s in x}
        count.nfe += 2
        out = call(both, {s: v.repeat(2, 1, 1) for s, v in x.items()}, t.repeat(2))
        mixed = {}
        for s in x:
            cond, uncond = out[s].to(x[s].dtype).chunk(2)
            weight = scales.to(cond).reshape(-1, *([1] * (cond.ndim - 1)))
            mixed[s] = uncond + weight * (cond - uncond)
            keep = guided.to(cond.device).reshape(-1, *([1] * (cond.ndim - 1)))
            if guided_features is not None and s in guided_features:
                keep = keep & guided_features[s].to(cond.device)
            mixed[s] = torch.where(keep, mixed[s], cond)
        return mixed

    return predict
