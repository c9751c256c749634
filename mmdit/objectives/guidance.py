"""Classifier-free guidance: out = out_uncond + scale * (out_cond - out_uncond). The unconditional branch is
what condition dropout trains on: the null label (index num_classes) for every label, and the empty value
(`DiscreteAdapter.empty`) for every prompt stream. The output is whatever the network predicts (a velocity,
or an ε / v / x0 prediction); the objective turns it into a step."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmdit.model.backbone import MMDiT
from mmdit.model.masks import role_structure
from mmdit.model.tokens import Tokens
from mmdit.objectives.objective import Predict, State


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
) -> Predict:
    """The network as the samplers call it: {stream: x [B, N, F]}, model time [B] -> {stream: [B, N, F_out]}
    for the generated streams.

    layouts: the generated streams' positions and masks; labels [B] and numbers [B] (seconds, ...) condition
    them; conditions: clean streams given at model time 0 (a prompt, another medium), with `unconditional`
    replacing some of them in the unconditional branch (the empty prompt); roles: every stream's role, for
    the attention structure when more than one stream takes part. With scale == 1, or nothing to drop, one
    model call per evaluation; otherwise both halves run as one batch of 2B, both with the numbers (they
    describe the item's extent, which guidance must not change). guided_features: {stream: [F_out] bool},
    the output features guidance applies to (the rest keep the conditional output: a learned variance, or
    DiT's unguided fourth latent channel); default all."""
    numbers, conditions, unconditional = (
        dict(numbers or {}),
        dict(conditions or {}),
        dict(unconditional or {}),
    )
    guided = scale != 1.0 and (bool(labels) or bool(unconditional))
    if guided:
        layouts = {s: twice(tok) for s, tok in layouts.items()}
        conditions = {s: _stacked(tok, unconditional.get(s, tok)) for s, tok in conditions.items()}
        nulls = null_labels(model, labels)
        labels = {k: torch.cat([v, nulls[k]]) for k, v in labels.items()}
        numbers = {k: v.repeat(2) for k, v in numbers.items()}
    order = [s for s in model.specs if s in layouts or s in conditions]

    def call(x: State, t: Tensor) -> dict[str, Tensor]:
        streams = {s: conditions[s] if s in conditions else layouts[s].with_x(x[s]) for s in order}
        if not conditions:
            return model(streams, t, labels, numbers=numbers)
        times = {s: torch.zeros_like(t) if s in conditions else t for s in order}
        structure = role_structure(streams, roles) if roles is not None else None
        return model(streams, times, labels, numbers=numbers, structure=structure)

    def predict(x: State, t: Tensor) -> State:
        # Outputs take the state's dtype: under autocast (sampling in bf16) the network's come out in bf16,
        # and the guidance mix and the sampler's steps should not.
        if not guided:
            out = call(x, t)
            return {s: out[s].to(x[s].dtype) for s in x}
        out = call({s: v.repeat(2, 1, 1) for s, v in x.items()}, t.repeat(2))
        mixed = {}
        for s in x:
            cond, uncond = out[s].to(x[s].dtype).chunk(2)
            mixed[s] = uncond + scale * (cond - uncond)
            if guided_features is not None and s in guided_features:
                mixed[s] = torch.where(guided_features[s].to(cond.device), mixed[s], cond)
        return mixed

    return predict
