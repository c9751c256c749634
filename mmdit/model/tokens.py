"""The one data structure every modality speaks: a padded batch of tokens with positions and a mask."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass
class Tokens:
    """A batch of token sequences for one stream.

    x:    float [B, N, F], the values the diffusion runs on (patch pixels, mel bins, SDF cells, latents);
          for a discrete stream (text) integer ids [B, N], which the backbone embeds with the stream's table.
    pos:  float [B, N, A], each token's coordinates on the stream's axes (A = 0 for unordered sets).
    mask: bool  [B, N], True for real tokens, False for padding.
    """

    x: Tensor
    pos: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.discrete and self.x.ndim != 2:
            raise ValueError(f"discrete Tokens.x (ids) must be [B, N], got shape {tuple(self.x.shape)}")
        if not self.discrete and self.x.ndim != 3:
            raise ValueError(f"Tokens.x must be [B, N, F], got shape {tuple(self.x.shape)}")
        batch, length = self.x.shape[:2]
        if self.pos.ndim != 3 or self.pos.shape[:2] != (batch, length):
            raise ValueError(f"Tokens.pos must be [B={batch}, N={length}, A], got {tuple(self.pos.shape)}")
        if self.mask.shape != (batch, length) or self.mask.dtype != torch.bool:
            got = f"{self.mask.dtype} {tuple(self.mask.shape)}"
            raise ValueError(f"Tokens.mask must be bool [B={batch}, N={length}], got {got}")

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def length(self) -> int:
        return self.x.shape[1]

    @property
    def features(self) -> int:
        """F of continuous tokens; 1 for ids."""
        return 1 if self.discrete else self.x.shape[2]

    @property
    def discrete(self) -> bool:
        """Integer ids (text) rather than continuous values."""
        return not torch.is_floating_point(self.x)

    def with_x(self, x: Tensor) -> Tokens:
        """The same positions and mask carrying new values (noised tokens, predictions)."""
        return replace(self, x=x)

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(self.x.to(device), self.pos.to(device), self.mask.to(device))


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values [B, N, F] over the real tokens (mask [B, N] True) and all features: a scalar."""
    weight = mask.to(values.dtype)[..., None]
    return (values * weight).sum() / (weight.sum() * values.shape[-1]).clamp_min(1)
