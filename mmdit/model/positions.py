"""Where tokens are: rotary embeddings over up to three axes, and the fixed 2D sin-cos table of DiT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def split_head_dim(head_dim: int, axes: int) -> list[int]:
    """Channels of each head given to each rotary axis: equal even shares, the remainder to the first axis
    (64 over three axes gives [24, 20, 20]; CogVideoX and Open-Sora give h and w the larger shares, which a
    per-stream split will allow when the video stream needs it)."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
    share = (head_dim // axes) // 2 * 2
    if share == 0 and axes > 1:
        raise ValueError(f"head dimension {head_dim} cannot give each of {axes} rotary axes a channel pair")
    return [head_dim - share * (axes - 1)] + [share] * (axes - 1)


def rope_angles(pos: Tensor, axes_dim: Sequence[int], theta: float = 10000.0) -> Tensor:
    """Rotation angles for rotary embeddings.

    pos: [B, N, A] coordinates; axes_dim: channels per axis (even, summing to the head dim).
    Returns [B, N, head_dim / 2]: the angle of each channel pair, axis by axis.
    """
    if pos.shape[-1] != len(axes_dim):
        raise ValueError(
            f"positions have {pos.shape[-1]} axes but axes_dim {list(axes_dim)} has {len(axes_dim)}"
        )
    angles = []
    for axis, dim in enumerate(axes_dim):
        freqs = theta ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float64) / dim)
        angles.append(pos[..., axis, None].double() * freqs)
    return torch.cat(angles, dim=-1).float()


def rope_rotation(angles: Tensor) -> Tensor:
    """Angles [B, N, D / 2] -> the rotation `apply_rope` applies, float32 [B, 1, N, 2, D] (broadcast over
    heads): the cosine of each channel pair's angle on both of its channels, then its sine signed (-sin, sin)
    for the pair's (first, second) channel. Computed once per forward and shared by every block."""
    cos, sin = (f(angles.float()).repeat_interleave(2, dim=-1) for f in (torch.cos, torch.sin))
    signs = torch.tensor([-1.0, 1.0], device=angles.device).repeat(angles.shape[-1])
    return torch.stack((cos, sin * signs), dim=-2)[:, None]


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotate channel pairs (0, 1), (2, 3), ... of x [B, H, N, D] by `rope_rotation`'s [B, 1, N, 2, D], in
    float32: (a, b) -> (a cos - b sin, b cos + a sin), as x · cos + (x with each pair swapped) · signed sin,
    so that every product runs over contiguous channels (the same floats as the pairwise form, in about half
    its time forward and backward)."""
    cos, signed_sin = rotation.unbind(-2)
    x32 = x.float()
    swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x32 * cos + swapped * signed_sin).type_as(x)


def sincos_1d(coords: Tensor, dim: int) -> Tensor:
    """[..., ] coordinates -> [..., dim] features: sin of all frequencies, then cos (MAE / DiT order)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = coords.double()[..., None] * omega
    return torch.cat([out.sin(), out.cos()], dim=-1)


class SinCosTable(nn.Module):
    """The frozen 2D sin-cos position table of DiT / MAE, looked up by a token's (h, w) coordinates.

    The first half of the channels encodes w and the second half h, as in DiT's table, so converted
    checkpoints see the embeddings they were trained with. The table is a frozen parameter, counted in
    parameter totals as DiT counts it. A grid smaller than the table reads its centre (SD3's
    `pos_embed_max_size` cropping), so one table serves every image size up to its extent.
    """

    def __init__(self, grid: tuple[int, int], dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"a 2D sin-cos table needs a width divisible by 4, got {dim}")
        h, w = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        table = torch.cat([sincos_1d(w, dim // 2), sincos_1d(h, dim // 2)], dim=-1)
        self.grid = grid
        self.table = nn.Parameter(table.float(), requires_grad=False)

    def forward(self, pos: Tensor) -> Tensor:
        """pos: [B, N, 2] integer-valued (h, w), a grid starting at (0, 0) -> [B, N, dim]."""
        index = pos.long()
        extent = index.flatten(0, 1).amax(dim=0) + 1
        if index.min() < 0 or extent[0] > self.grid[0] or extent[1] > self.grid[1]:
            raise ValueError(
                f"a grid of {tuple(extent.tolist())} tokens does not fit the sin-cos table of {self.grid}"
            )
        top, left = (self.grid[0] - extent[0]) // 2, (self.grid[1] - extent[1]) // 2
        return self.table[index[..., 0] + top, index[..., 1] + left]
