"""Which tokens attend to which, block by block.

"full" is one joint attention over every real token (CogVideoX's 3D attention, SD3's joint attention).
"factorised" is Latte's spatial-then-temporal variant: blocks alternate between a *spatial* layout (a
token of a stream with (t, h, w) positions sees its stream's tokens of the same frame t) and a *temporal*
one (it sees its stream's tokens at the same (h, w) across time). Tokens of streams without three axes
(labels, text, sets) see, and are seen by, everything. Every layout also drops padding keys.

The factorised layouts are boolean [B, 1, N, N] masks through SDPA: at these sizes that is simple and exact;
at scale, reshaping the sequence to [B·T, H·W] and [B·H·W, T] batches would skip the masked-out scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmdit.model.attention import attention_mask
from mmdit.model.tokens import Tokens

LAYOUTS = ("full", "factorised")


def _group_mask(streams: Sequence[Tokens], axes: slice) -> Tensor:
    """[B, N, N] bool: True where query and key are tokens of the same 3-axis stream whose coordinates
    `axes` (of t, h, w) agree, or where either token's stream is not 3-axis."""
    keys, spatiotemporal = [], []
    for index, tokens in enumerate(streams):
        video = tokens.pos.shape[-1] == 3
        coords = tokens.pos[..., axes] if video else tokens.pos.new_full((*tokens.pos.shape[:2], 1), -1.0)
        stream = torch.full_like(coords[..., :1], index)
        # Pad to two coordinates so that the key rows of all streams stack into one tensor.
        keys.append(
            torch.cat([stream, coords, coords.new_full((*coords.shape[:2], 3 - coords.shape[-1]), 0)], -1)
        )
        spatiotemporal.append(torch.full(tokens.mask.shape, video, device=tokens.mask.device))
    key, video = torch.cat(keys, 1), torch.cat(spatiotemporal, 1)
    same = (key[:, :, None] == key[:, None, :]).all(-1)
    return same | ~video[:, :, None] | ~video[:, None, :]


def block_masks(
    layout: str, streams: Sequence[Tokens], structure: Tensor | None = None
) -> list[Tensor | None]:
    """The attention masks that blocks use in turn (block i takes mask i mod len): one [B, 1, 1, N] key
    padding mask (or None, or the [B, 1, N, N] `structure` of roles / packing) for "full"; a spatial and a
    temporal [B, 1, N, N] mask for "factorised", each also limited by `structure`.

    A token always sees itself (`attention_mask`), so that a padding token whose frame is all padding still
    has a key to attend to (an empty row would make SDPA return NaN, and NaN survives the loss's zero
    weight)."""
    if layout not in LAYOUTS:
        raise ValueError(f"attention layout must be one of {LAYOUTS}, got {layout!r}")
    real = torch.cat([s.mask for s in streams], dim=1)
    if layout == "full":
        return [attention_mask(real, structure)]
    masks = []
    for axes in (slice(0, 1), slice(1, 3)):  # spatial: same t; temporal: same (h, w)
        group = _group_mask(streams, axes)
        masks.append(attention_mask(real, group if structure is None else group & structure))
    return masks
