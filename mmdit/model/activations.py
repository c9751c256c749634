"""The MLP activations a recipe can pick (`model.mlp_activation`), and DiT's tanh GELU in the form that
`torch.compile` turns into fast code."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SQRT_8_OVER_PI = math.sqrt(8 / math.pi)


def gelu_tanh_as_sigmoid(x: Tensor) -> Tensor:
    """GELU's tanh approximation x · ½(1 + tanh(√(2/π)(x + 0.044715x³))), written as x · σ(2·(…)): the same
    function, since ½(1 + tanh u) = σ(2u). Any shape."""
    return x * torch.sigmoid(SQRT_8_OVER_PI * (x + 0.044715 * x * x * x))


class TanhGELU(nn.GELU):
    """nn.GELU(approximate="tanh") (DiT's, SD3's) that, inside `torch.compile`, computes the sigmoid form:
    inductor's CPU code for tanh is slow, and the sigmoid form is equal to float32 rounding. Outside a
    compiled region ATen's fused kernel is the fastest (timings in docs/performance.md)."""

    def __init__(self):
        super().__init__(approximate="tanh")

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return gelu_tanh_as_sigmoid(x)
        return super().forward(x)


MLP_ACTIVATIONS = {"gelu_tanh": TanhGELU, "gelu": nn.GELU}
"""`mlp_activation` -> its module. DiT and SD3 use the tanh approximation; the exact (erf) GELU is the same
curve within 5e-4, and in eager mode on the CPU its forward + backward takes well under half the time."""


def mlp_activation(name: str) -> nn.Module:
    """`model.mlp_activation` -> a fresh activation module; an unknown name is refused with the known ones."""
    if name not in MLP_ACTIVATIONS:
        raise ValueError(f"mlp_activation must be one of {list(MLP_ACTIVATIONS)}, got {name!r}")
    return MLP_ACTIVATIONS[name]()
