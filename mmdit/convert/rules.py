"""Reversible key rules between a foreign checkpoint layout and mmdit's state dict.

A rule names the foreign keys it reads (none, one, or several that are concatenated or must agree) and the
mmdit key it writes, with the tensor map both ways, so every converter is also an exporter and the round trip
foreign -> mmdit -> foreign is checked to be bit-identical in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor


def _same(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class Rule:
    """`target` (mmdit key) from `sources` (foreign keys).

    combine: foreign tensors -> the mmdit tensor.
    split:   the mmdit tensor -> foreign tensors, the inverse of `combine`.
    fill:    for a rule without sources: "zeros", or "model" to keep the model's own value (a table mmdit
             computes that the foreign layout does not store).
    """

    target: str
    sources: tuple[str, ...]
    combine: Callable[[list[Tensor]], Tensor]
    split: Callable[[Tensor], list[Tensor]]
    fill: str = field(default="", compare=False)


def copy(source: str, target: str, forward: Callable = _same, inverse: Callable = _same) -> Rule:
    """One tensor, optionally re-laid-out (`forward` and `inverse` must be exact inverses)."""
    return Rule(target, (source,), lambda ts: forward(ts[0]), lambda t: [inverse(t)])


def concat(sources: Iterable[str], target: str) -> Rule:
    """Separate projections (q, k, v) -> one fused tensor along dim 0."""
    sources = tuple(sources)
    return Rule(
        target, sources, lambda ts: torch.cat(ts, dim=0), lambda t: list(t.chunk(len(sources), dim=0))
    )


def shared(sources: Iterable[str], target: str) -> Rule:
    """A tensor stored once per block in the foreign layout (all copies must be equal) -> one tensor."""
    sources = tuple(sources)

    def combine(tensors: list[Tensor]) -> Tensor:
        for key, tensor in zip(sources[1:], tensors[1:], strict=True):
            if not torch.equal(tensor, tensors[0]):
                raise ValueError(
                    f"{key} differs from {sources[0]}: mmdit keeps one copy of {target}, so all copies "
                    "must be equal (they are in every checkpoint converted from the original DiT)"
                )
        return tensors[0]

    return Rule(target, sources, combine, lambda t: [t] * len(sources))


def zeros_for(target: str) -> Rule:
    """An mmdit tensor with no foreign counterpart whose effect must be nil: zeros."""
    return Rule(target, (), lambda ts: None, lambda t: [], fill="zeros")


def computed(target: str) -> Rule:
    """An mmdit tensor the foreign layout computes instead of storing (a position table): the model's own."""
    return Rule(target, (), lambda ts: None, lambda t: [], fill="model")


def swap_halves(x: Tensor) -> Tensor:
    """(a, b) stacked on dim 0 -> (b, a): diffusers' AdaLayerNormContinuous gives (scale, shift)."""
    first, second = x.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def conv_to_linear(weight: Tensor) -> Tensor:
    """Patch-embedding conv weight [D, C, p, p] -> linear weight [D, p*p*C] in patchify's (p q c) order."""
    return rearrange(weight, "d c p q -> d (p q c)")


def linear_to_conv(channels: int) -> Callable[[Tensor], Tensor]:
    def inverse(weight: Tensor) -> Tensor:
        p = int(round((weight.shape[1] // channels) ** 0.5))
        return rearrange(weight, "d (p q c) -> d c p q", p=p, q=p, c=channels)

    return inverse


def learned_sigma_rows(patch: int, channels: int) -> tuple[Callable, Callable]:
    """A final linear over (p q 2C) outputs -> (2 p q C): mmdit's learned-variance stream carries the
    prediction in the first half of its features and the variance values in the second, each in patchify's
    order. Works for weights [out, D] and biases [out]."""

    def forward(x: Tensor) -> Tensor:
        return rearrange(x, "(p q two c) ... -> (two p q c) ...", p=patch, q=patch, two=2, c=channels)

    def inverse(x: Tensor) -> Tensor:
        return rearrange(x, "(two p q c) ... -> (p q two c) ...", p=patch, q=patch, two=2, c=channels)

    return forward, inverse


def apply(rules: list[Rule], foreign: Mapping[str, Tensor], ours: Mapping[str, Tensor], name: str) -> dict:
    """Foreign state dict -> mmdit state dict for the model whose (shape-giving) state is `ours`.

    Refuses, naming the key, a foreign key no rule reads, a key a rule needs that is missing, or a tensor
    whose shape does not fit the model."""
    needed = {key for rule in rules for key in rule.sources}
    unknown = sorted(set(foreign) - needed)
    if unknown:
        raise KeyError(f"{name}: unexpected key {unknown[0]!r} ({len(unknown)} unexpected keys in all)")
    missing = sorted(needed - set(foreign))
    if missing:
        raise KeyError(f"{name}: missing key {missing[0]!r} ({len(missing)} missing keys in all)")
    converted = {}
    for rule in rules:
        expected = ours[rule.target]
        if not rule.sources:
            converted[rule.target] = torch.zeros_like(expected) if rule.fill == "zeros" else expected.clone()
            continue
        value = rule.combine([foreign[key] for key in rule.sources])
        if value.shape != expected.shape:
            shapes = ", ".join(f"{k} {tuple(foreign[k].shape)}" for k in rule.sources)
            raise ValueError(
                f"{name}: {shapes} gives {rule.target} of shape {tuple(value.shape)}, "
                f"the model needs {tuple(expected.shape)}"
            )
        converted[rule.target] = value.to(expected.dtype)
    uncovered = sorted(set(ours) - set(converted))
    if uncovered:
        raise KeyError(f"{name}: no rule writes mmdit's {uncovered[0]!r}")
    return converted


def invert(rules: list[Rule], ours: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """mmdit state dict -> the foreign layout the rules came from."""
    foreign = {}
    for rule in rules:
        for key, tensor in zip(rule.sources, rule.split(ours[rule.target]), strict=True):
            foreign[key] = tensor.contiguous()
    return foreign
