"""The loss the speed benchmarks train on: a regression onto a fixed random target, as a diffusion loss is.

`out.square().mean()` would be the obvious stand-in, but a zero-initialised output layer (DiT's adaLN-Zero,
ours) outputs zeros, where out² has no gradient at all: every step would then run Adam on all-zero
gradients, which is not a training step (and on x86 the square root of zeros takes a slow path).
"""

from __future__ import annotations

import torch
from torch import Tensor

_targets: dict[tuple, Tensor] = {}


def target(out: Tensor) -> Tensor:
    """A fixed standard-normal float32 tensor shaped like `out` [...], on its device (drawn once per shape, so
    that drawing it is not timed)."""
    key = (tuple(out.shape), out.device)
    if key not in _targets:
        _targets[key] = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.device)
    return _targets[key]
