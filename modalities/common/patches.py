"""N-D patch tokens, ViT / DiT style: a grid of values [B, C, *extent] (a series, an image, a volume, a clip)
cut into non-overlapping patches, one token each, with the patch's index along every axis as its position.

Token order is row-major over the patch grid (the last axis fastest); a token's features run over the
cells of its patch (last axis fastest), channels fastest of all, as DiT's patch embedding flattens them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

AXES = "defg"  # einops names of up to four grid axes (patches along them: "pqrs")
CELLS = "pqrs"


def grid_positions(shape: Sequence[int], batch_size: int, device: torch.device | str | None = None) -> Tensor:
    """Index of every cell of a grid of `shape` in row-major order: float [B, prod(shape), len(shape)]."""
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in shape]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    return pos.expand(batch_size, -1, -1).clone()


def _patterns(ndim: int) -> tuple[str, str]:
    if not 1 <= ndim <= len(AXES):
        raise ValueError(f"grids of 1 to {len(AXES)} axes are supported, got {ndim}")
    grid = " ".join(f"({a} {p})" for a, p in zip(AXES[:ndim], CELLS[:ndim], strict=True))
    return f"b c {grid}", f"b ({' '.join(AXES[:ndim])}) ({' '.join(CELLS[:ndim])} c)"


def _per_axis(patch: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return (patch,) * ndim if isinstance(patch, int) else tuple(patch)


def patchify(media: Tensor, patch: int | Sequence[int]) -> tuple[Tensor, Tensor]:
    """media [B, C, *extent] -> (x [B, N, prod(patch)*C], pos [B, N, ndim]), N = prod(extent / patch);
    one int patches every axis alike."""
    extent = media.shape[2:]
    patch = _per_axis(patch, len(extent))
    if len(extent) != len(patch) or any(n % p for n, p in zip(extent, patch, strict=True)):
        raise ValueError(
            f"grid shape {tuple(media.shape)}: the extent after [B, C] must be divisible by the patch "
            f"{tuple(patch)}"
        )
    source, target = _patterns(len(patch))
    x = rearrange(media, f"{source} -> {target}", **dict(zip(CELLS, patch, strict=False)))
    cells = [n // p for n, p in zip(extent, patch, strict=True)]
    return x, grid_positions(cells, media.shape[0], media.device)


def unpatchify(x: Tensor, pos: Tensor, patch: int | Sequence[int], channels: int) -> Tensor:
    """x [B, N, prod(patch)*C] in `patchify`'s order, pos [B, N, ndim] -> media [B, C, *extent]; the patch
    grid is read from pos."""
    patch = _per_axis(patch, pos.shape[-1])
    cells = [int(pos[..., a].max()) + 1 for a in range(len(patch))]
    count, features = int(torch.tensor(cells).prod()), int(torch.tensor(list(patch)).prod()) * channels
    if x.shape[1:] != (count, features):
        grid = "×".join(map(str, cells))
        raise ValueError(
            f"tokens {tuple(x.shape)} do not fill a {grid} grid of {tuple(patch)} patches of {channels} "
            f"channels (expected [B, {count}, {features}])"
        )
    source, target = _patterns(len(patch))
    sizes = dict(zip(AXES, cells, strict=False)) | dict(zip(CELLS, patch, strict=False))
    return rearrange(x, f"{target} -> {source}", c=channels, **sizes)
