"""Who may see whom: the attention structure of a unified model, built from the streams' roles.

Roles (per task): "condition" (a clean input), "understand" (a clean media input that a generated text
describes) and "generate" (a noised media stream, or a text stream predicted token by token). Three ranks
order them, as Transfusion orders a sequence and BAGEL separates its full / causal / noise segments:

    rank 0: condition, understand      clean inputs: see each other, bidirectionally
    rank 1: generated text             sees rank 0, and itself causally
    rank 2: generated (noised) media   sees everything, itself bidirectionally

A token sees the tokens of every lower rank, of other streams of its own rank, and of its own stream (only
earlier ones in a causal stream). So a clean input never sees noised tokens or text still being written, and
text never sees its own future.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmdit.model.tokens import Tokens

ROLES = ("condition", "understand", "generate")


def rank(role: str, discrete: bool) -> int:
    if role not in ROLES:
        raise ValueError(f"unknown stream role {role!r}; roles: {', '.join(ROLES)}")
    if role != "generate":
        return 0
    return 1 if discrete else 2


def role_structure(streams: Mapping[str, Tokens], roles: Mapping[str, str]) -> Tensor:
    """streams: {name: Tokens} in the model's concatenation order; roles: {name: role}.

    Returns [B, N, N] bool over the concatenated tokens: True where query (row) may see key (column).
    Text streams (discrete tokens) are causal within themselves; media streams are bidirectional."""
    ranks, stream_ids, positions = [], [], []
    for index, (name, tokens) in enumerate(streams.items()):
        n = tokens.length
        ranks.append(torch.full((n,), rank(roles[name], tokens.discrete)))
        stream_ids.append(torch.full((n,), index))
        # Causal order inside a text stream; media tokens share one position, so they all see each other.
        positions.append(torch.arange(n) if tokens.discrete else torch.zeros(n, dtype=torch.long))
    ranks, stream_ids, positions = torch.cat(ranks), torch.cat(stream_ids), torch.cat(positions)
    lower = ranks[None, :] < ranks[:, None]
    same_rank_other_stream = (ranks[None, :] == ranks[:, None]) & (stream_ids[None, :] != stream_ids[:, None])
    own_past = (stream_ids[None, :] == stream_ids[:, None]) & (positions[None, :] <= positions[:, None])
    structure = lower | same_rank_other_stream | own_past
    first = next(iter(streams.values()))
    return structure.to(first.mask.device).expand(first.batch_size, -1, -1)
