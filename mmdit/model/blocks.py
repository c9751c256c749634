"""Transformer blocks with adaLN-Zero conditioning.

A *joint* block gives each stream its own weights (modulation, QKV, output projection, MLP) and runs one
attention over the tokens of all streams (SD3's MMDiT). A *single* block runs one set of weights over the
concatenated sequence (Flux / Open-Sora 2); with one stream it is exactly DiT's block. Each stream brings its
own conditioning vector, so each stream can sit at its own timestep, in both kinds of block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdit.model.activations import mlp_activation
from mmdit.model.attention import attend

Modulation = tuple[Tensor, ...]
"""shift, scale, gate for attention, then shift, scale, gate for the MLP; each [B, 1 or N, D]."""


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift in one fused kernel (x [B, N, D]; shift, scale [B, 1 or N, D])."""
    return torch.addcmul(shift, x, 1 + scale)


def layer_norm(width: int, eps: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(width, elementwise_affine=False, eps=eps)


class QKNorm(nn.RMSNorm):
    """RMS norm of queries or keys [..., head_dim] whose weight takes the input's dtype. Under autocast q and
    k leave the QKV projection in bf16 / fp16 while the weight stays float32, and torch's fused RMS-norm
    kernel needs the two alike (otherwise it warns and falls back to unfused ops)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str = "gelu_tanh"):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = mlp_activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class StreamWeights(nn.Module):
    """The weights a stream owns inside a block. `modulation` is zero-initialised (adaLN-Zero), so the block
    starts as the identity. `mlp_norm_eps` is 1e-6 as in DiT and SD3; diffusers' DiT port uses 1e-5 there.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        mlp_norm_eps: float = 1e-6,
        mlp_activation: str = "gelu_tanh",
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        head_dim = width // heads
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.norm1 = layer_norm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = QKNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = QKNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(width, width)
        self.norm2 = layer_norm(width, mlp_norm_eps)
        self.mlp = Mlp(width, int(width * mlp_ratio), mlp_activation)

    def modulations(self, conds: list[Tensor], lengths: list[int], items: Tensor | None = None) -> Modulation:
        """Per-stream conditioning vectors [B, D] -> six modulation tensors for the concatenated sequence:
        [B, 1, D] when there is one stream, else [B, N, D] with each stream's vector repeated over its
        tokens. The linear layer runs once per stream, not once per token.

        Packed rows (`items` [R, N], the item of each token, see `mmdit.model.packing`): conds are per item
        [I, D], and each token gets its item's modulation, [R, N, D]."""
        if items is not None:
            return per_token(self.modulation(conds[0]), items).chunk(6, dim=-1)
        mods = [self.modulation(c)[:, None] for c in conds]
        if len(mods) > 1:
            mods = [torch.cat([m.expand(-1, n, -1) for m, n in zip(mods, lengths, strict=True)], dim=1)]
        return mods[0].chunk(6, dim=-1)

    def qkv_heads(self, x: Tensor, mod: Modulation) -> tuple[Tensor, Tensor, Tensor]:
        """x: [B, N, D] -> q, k, v: [B, H, N, D / H] (q and k RMS-normalised when qk_norm)."""
        qkv = self.qkv(modulate(self.norm1(x), mod[0], mod[1])).unflatten(-1, (3, self.heads, -1))
        # Split before moving the heads forward: the backward then stacks the three gradients straight into
        # the projection's [B, N, 3·D] layout, which its matmuls read without another copy.
        q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))
        return self.q_norm(q), self.k_norm(k), v

    def finish(self, x: Tensor, attended: Tensor, mod: Modulation) -> Tensor:
        """Gated residual of the attention output [B, N, D], then the gated MLP."""
        x = torch.addcmul(x, mod[2], self.proj(attended))
        return torch.addcmul(x, mod[5], self.mlp(modulate(self.norm2(x), mod[3], mod[4])))


def per_token(per_item: Tensor, items: Tensor) -> Tensor:
    """per_item [I, C] values, items [R, N] item indices (-1 for padding) -> [R, N, C] (padding takes item 0's
    values; its outputs are never read)."""
    return per_item[items.clamp_min(0)]


class JointBlock(nn.Module):
    """Per-stream weights, one attention over all streams' tokens (concatenated in stream order)."""

    def __init__(
        self,
        streams: list[str],
        width: int,
        heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        **mlp_options: Any,
    ):
        """mlp_options: `StreamWeights`' mlp_norm_eps and mlp_activation."""
        super().__init__()
        self.streams = nn.ModuleDict(
            {s: StreamWeights(width, heads, mlp_ratio, qk_norm, **mlp_options) for s in streams}
        )

    def forward(
        self,
        xs: Mapping[str, Tensor],
        conds: Mapping[str, Tensor],
        rotation: Tensor | None,
        mask: Tensor | None,
        items: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """xs: {stream: [B, N_s, D]}; conds: {stream: [B, D]}; rotation: [B, 1, sum N_s, 2, D / H] or
        None (`rope_rotation`); mask: [B, 1, 1 or N, N] bool or None; items: packed rows' item per token.
        Returns {stream: [B, N_s, D]}."""
        mods = {s: self.streams[s].modulations([conds[s]], [x.shape[1]], items) for s, x in xs.items()}
        heads = [self.streams[s].qkv_heads(x, mods[s]) for s, x in xs.items()]
        q, k, v = (torch.cat(parts, dim=2) for parts in zip(*heads, strict=True))
        attended = attend(q, k, v, rotation, mask).split([x.shape[1] for x in xs.values()], dim=1)
        return {
            s: self.streams[s].finish(x, a, mods[s]) for (s, x), a in zip(xs.items(), attended, strict=True)
        }


class SingleBlock(nn.Module):
    """One set of weights over the concatenated sequence; each token modulated by its own stream's vector."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, **mlp_options: Any):
        """mlp_options: `StreamWeights`' mlp_norm_eps and mlp_activation."""
        super().__init__()
        self.weights = StreamWeights(width, heads, mlp_ratio, qk_norm, **mlp_options)

    def forward(
        self,
        xs: Mapping[str, Tensor],
        conds: Mapping[str, Tensor],
        rotation: Tensor | None,
        mask: Tensor | None,
        items: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Same shapes as `JointBlock.forward`."""
        lengths = [x.shape[1] for x in xs.values()]
        mod = self.weights.modulations([conds[s] for s in xs], lengths, items)
        # One stream is used as it is: concatenating it alone would copy every activation.
        x = torch.cat(list(xs.values()), dim=1) if len(xs) > 1 else next(iter(xs.values()))
        attended = attend(*self.weights.qkv_heads(x, mod), rotation, mask)
        return dict(zip(xs, self.weights.finish(x, attended, mod).split(lengths, dim=1), strict=True))


class FinalLayer(nn.Module):
    """A stream's output head: adaptive LayerNorm (shift, scale) then a linear map to the token features.
    Zero-initialised, so an untrained model predicts zeros."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = layer_norm(width)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features)

    def forward(self, x: Tensor, cond: Tensor, items: Tensor | None = None) -> Tensor:
        """x: [B, N, D], cond: [B, D] (per item [I, D] with packed rows' `items`) -> [B, N, out_features]."""
        mod = self.modulation(cond)
        shift, scale = (mod[:, None] if items is None else per_token(mod, items)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
