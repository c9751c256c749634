"""Scaled dot-product attention over the tokens of all streams at once, with rotary positions and masks."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from mmdit.positions import apply_rope


def key_padding_mask(mask: Tensor) -> Tensor | None:
    """[B, N] real-token mask -> [B, 1, 1, N] boolean attention mask (True = may attend), or None when
    nothing is padded, so that SDPA is free to pick its fused flash / memory-efficient kernels."""
    if bool(mask.all()):
        return None
    return mask[:, None, None, :]


def attend(q: Tensor, k: Tensor, v: Tensor, angles: Tensor | None, mask: Tensor | None) -> Tensor:
    """q, k, v: [B, H, N, D]; angles: [B, N, D / 2] rotary angles or None; mask: [B, 1, N or 1, N] bool.

    Returns [B, N, H * D]."""
    if angles is not None:
        q, k = apply_rope(q, angles), apply_rope(k, angles)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return rearrange(out, "b h n d -> b n (h d)")
