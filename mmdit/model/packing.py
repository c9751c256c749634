"""Sequence packing: items of different token counts share rows instead of being padded to the longest.

A padded batch [B, N_max, F] spends attention and MLP work on padding; packing puts several items in one row
of `capacity` tokens (first-fit decreasing) with block-diagonal attention, so a token only sees its own
item, and every token is modulated by its own item's conditioning. `unpack` restores the padded layout, so
the loss (a mean over real tokens) is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmdit.model.tokens import Tokens


@dataclass
class Packed:
    """tokens: rows [R, capacity, F] (mask marks real tokens); items: [R, capacity] the batch index of each
    token, -1 for padding; rows: [B] the row each item went to; offsets: [B] where it starts in that row."""

    tokens: Tokens
    items: Tensor
    rows: Tensor
    offsets: Tensor


def padding_share(mask: Tensor) -> float:
    """The share of slots [.., N] that hold padding (mask False)."""
    return 1.0 - mask.float().mean().item()


def pack(batch: Tokens, capacity: int | None = None) -> Packed:
    """A padded batch whose real tokens come first in each item (mask [B, N] True then False) -> rows of
    `capacity` tokens (default: the longest item), filled first-fit in decreasing length."""
    lengths = batch.mask.sum(dim=1).tolist()
    if any(batch.mask[i, n:].any() for i, n in enumerate(lengths)):
        raise ValueError("pack needs each item's real tokens first (mask True then False)")
    capacity = capacity or max(lengths)
    if max(lengths) > capacity:
        raise ValueError(f"an item of {max(lengths)} tokens does not fit rows of {capacity}")
    free: list[int] = []
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if row is None:
            free.append(capacity)
            row = len(free) - 1
        rows[i], offsets[i] = row, capacity - free[row]
        free[row] -= lengths[i]
    features = batch.x.shape[2:]
    x = batch.x.new_zeros(len(free), capacity, *features)
    pos = batch.pos.new_zeros(len(free), capacity, batch.pos.shape[-1])
    items = torch.full((len(free), capacity), -1, dtype=torch.long, device=batch.x.device)
    for i, n in enumerate(lengths):
        span = slice(offsets[i], offsets[i] + n)
        x[rows[i], span], pos[rows[i], span], items[rows[i], span] = batch.x[i, :n], batch.pos[i, :n], i
    return Packed(Tokens(x, pos, items >= 0), items, torch.tensor(rows), torch.tensor(offsets))


def unpack(values: Tensor, packed: Packed, like: Tokens) -> Tensor:
    """values [R, capacity, C] in packed rows -> [B, N, C] in `like`'s padded layout (zeros on padding)."""
    out = values.new_zeros(like.batch_size, like.length, values.shape[-1])
    for i, n in enumerate(like.mask.sum(dim=1).tolist()):
        start = int(packed.offsets[i])
        out[i, :n] = values[int(packed.rows[i]), start : start + n]
    return out
