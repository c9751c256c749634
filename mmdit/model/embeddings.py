"""Conditioning embeddings: diffusion time, class labels and pooled vectors, each mapped to the width."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TIME_SCALE = 1000.0
"""The backbone sees t in [0, 1] as t * 1000, so rectified flow's t and DDPM's integer step k (t = k / 1000)
give the same embedding and DiT / SD3 checkpoints see the inputs they were trained with."""


def timestep_features(
    t: Tensor, dim: int = 256, max_period: float = 10000.0, frequency_shift: float = 0.0
) -> Tensor:
    """t: [B] in [0, 1] -> [B, dim] sinusoidal features of t * 1000, cos first then sin (DiT's order).

    Frequencies are max_period^(-i / (dim/2 - frequency_shift)): DiT and SD3 use shift 0; diffusers'
    DiTTransformer2DModel uses 1, so its converted checkpoints need it to compute the same function."""
    half = dim // 2
    # The order of operations is DiT's and diffusers': at t * 1000 near 1000, float32 rounding of the
    # frequencies shows in the features, so a different order would not compute the same function.
    steps = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * steps / (half - frequency_shift))
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp(in_dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, width), nn.SiLU(), nn.Linear(width, width))


class TimestepEmbedder(nn.Module):
    """[B] times in [0, 1] -> [B, width]."""

    def __init__(self, width: int, frequency_dim: int = 256, frequency_shift: float = 0.0):
        super().__init__()
        self.frequency_dim, self.frequency_shift = frequency_dim, frequency_shift
        self.mlp = _mlp(frequency_dim, width)

    def forward(self, t: Tensor) -> Tensor:
        # The features are float32 whatever the weights (as in DiT and diffusers), then meet the MLP's dtype.
        features = timestep_features(t, self.frequency_dim, frequency_shift=self.frequency_shift)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """[B] class indices -> [B, width]. Index `num_classes` is the null class that classifier-free guidance
    trains with (dropped labels) and samples against."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, width)

    @property
    def null_index(self) -> int:
        return self.num_classes

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding(labels)


class PooledEmbedder(nn.Module):
    """[B, dim] pooled vector (e.g. a text encoder's pooled output) -> [B, width]. Null vector: zeros."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.mlp = _mlp(dim, width)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.mlp(pooled)
