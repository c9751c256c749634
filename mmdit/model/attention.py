"""Scaled dot-product attention over the tokens of all streams at once, with rotary positions and masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from mmdit.model.positions import apply_rope


def key_padding_mask(mask: Tensor) -> Tensor | None:
    """[B, N] real-token mask -> [B, 1, 1, N] boolean attention mask (True = may attend), or None when
    nothing is padded, so that SDPA is free to pick its fused flash / memory-efficient kernels."""
    if bool(mask.all()):
        return None
    return mask[:, None, None, :]


def attention_mask(real: Tensor, structure: Tensor | None) -> Tensor | None:
    """The mask SDPA gets: real [B, N] token mask, structure [B, N, N] (query may see key) or None.

    Returns [B, 1, 1 or N, N] bool or None. Every token sees itself, so no query row is empty (an empty row
    would make SDPA return NaN for it, even on padding)."""
    if structure is None:
        return key_padding_mask(real)
    eye = torch.eye(real.shape[1], dtype=torch.bool, device=real.device)
    return ((structure & real[:, None, :]) | eye)[:, None]


LOW_PRECISION = (torch.bfloat16, torch.float16)
# Up to this many tokens, CPU attention in bf16 runs as two matmuls: torch 2.11's CPU flash kernels are
# slower there (docs/performance.md). The scores kept for the backward take B·H·N² values, hence the bound.
MATMUL_ATTENTION_TOKENS = 1024


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q kᵀ / √D) v in the inputs' dtype, without autocast's float32 softmax: q, k, v [B, H, N, D],
    mask [B, 1, N or 1, N] bool (True = may attend) or None -> [B, H, N, D]."""
    with torch.autocast(q.device.type, enabled=False):
        # Scaling q (N·D products, not N²); contiguous [B, H, N, D] operands: a matmul of the strided
        # views that the fused QKV split gives is ~4x slower on the CPU.
        scores = (q * q.shape[-1] ** -0.5).contiguous() @ k.contiguous().transpose(-1, -2)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1) @ v


def attend(q: Tensor, k: Tensor, v: Tensor, rotation: Tensor | None, mask: Tensor | None) -> Tensor:
    """q, k, v: [B, H, N, D]; rotation: [B, 1, N, 2, D] (`rope_rotation`) or None; mask:
    [B, 1, N or 1, N] bool.

    Returns [B, N, H * D]."""
    if rotation is not None:
        q, k = apply_rope(q, rotation), apply_rope(k, rotation)
    if q.device.type == "cpu" and q.dtype in LOW_PRECISION and q.shape[-2] <= MATMUL_ATTENTION_TOKENS:
        out = matmul_attention(q, k, v, mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return rearrange(out, "b h n d -> b n (h d)")
