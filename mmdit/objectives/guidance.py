"""Classifier-free guidance: out = out_uncond + scale * (out_cond - out_uncond), with the unconditional branch
made by the null label (index num_classes), the input that condition dropout trains on. The output is a
velocity (rectified flow) or an ε / v / x0 prediction (Gaussian diffusion)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmdit.model.backbone import MMDiT
from mmdit.model.tokens import Tokens
from mmdit.objectives.samplers import State, Velocity


def null_labels(model: MMDiT, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The null class for every label key, same shape as `labels`."""
    return {k: torch.full_like(v, model.label_embedders[k].null_index) for k, v in labels.items()}


def twice(tokens: Tokens) -> Tokens:
    """A batch stacked on itself, [2B, ...]: the conditional and unconditional halves of guidance."""
    return Tokens(tokens.x.repeat(2, 1, 1), tokens.pos.repeat(2, 1, 1), tokens.mask.repeat(2, 1))


def guided_prediction(
    model: MMDiT,
    layouts: Mapping[str, Tokens],
    labels: Mapping[str, Tensor],
    scale: float = 1.0,
    numbers: Mapping[str, Tensor] | None = None,
    guided_features: Mapping[str, Tensor] | None = None,
) -> Velocity:
    """A model function {stream: x [B, N, F]}, t [B] -> {stream: output [B, N, F_out]} for the samplers.

    layouts give each stream's positions and mask; labels [B] condition the generation and numbers [B]
    (seconds, ...) size it. With scale == 1 (or no labels) one model call per evaluation; otherwise the
    conditional and unconditional halves run as one batch of 2B, both with the numbers: they describe the
    item's extent, which guidance must not change. guided_features: {stream: [F_out] bool}, the output
    features guidance applies to (the rest keep the conditional output: a learned variance, or DiT's
    unguided fourth latent channel); default all."""
    numbers = dict(numbers or {})
    guided = scale != 1.0 and bool(labels)
    if guided:
        layouts = {s: twice(tok) for s, tok in layouts.items()}
        nulls = null_labels(model, labels)
        labels = {k: torch.cat([v, nulls[k]]) for k, v in labels.items()}
        numbers = {k: v.repeat(2) for k, v in numbers.items()}

    def velocity(x: State, t: Tensor) -> State:
        # Outputs take the state's dtype: under autocast (sampling in bf16) the network's come out in bf16,
        # and the guidance mix and the sampler's steps should not.
        if not guided:
            out = model({s: layouts[s].with_x(v) for s, v in x.items()}, t, labels, numbers=numbers)
            return {s: v.to(x[s].dtype) for s, v in out.items()}
        streams = {s: layouts[s].with_x(v.repeat(2, 1, 1)) for s, v in x.items()}
        out = model(streams, t.repeat(2), labels, numbers=numbers)
        mixed = {}
        for s, both in out.items():
            cond, uncond = both.to(x[s].dtype).chunk(2)
            mixed[s] = uncond + scale * (cond - uncond)
            if guided_features is not None and s in guided_features:
                mixed[s] = torch.where(guided_features[s].to(cond.device), mixed[s], cond)
        return mixed

    return velocity
