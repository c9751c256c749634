"""How much arithmetic an MMDiT does: multiply-accumulates per item, counted from the architecture.

DiT's paper reports these as "Gflops" (they are MACs): DiT-S/2 6.06, B/2 23.01, L/2 80.70, XL/2 118.6 per
256 px image, which this count reproduces. A training step costs about 3 forward passes (the backward pass
is twice the forward), and one MAC is 2 floating-point operations, so training FLOPs = 6 x MACs.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmdit.model.backbone import MMDiT


def forward_macs(model: MMDiT, lengths: Mapping[str, int]) -> int:
    """Multiply-accumulates of one forward pass for one item with `lengths[s]` tokens in each stream s.

    Counts the matrix products (projections, attention scores and values, MLPs, adaLN, embedders); the
    element-wise work (norms, activations, rotary embeddings) is a few percent and left out, as in DiT."""
    width, total = model.width, sum(lengths.values())
    streams = [model.specs[s] for s in lengths]
    macs = sum(lengths[s.name] * s.features * width for s in streams)  # input projections
    per_condition = model.t_embedder.frequency_dim * width + width * width
    macs += len(streams) * per_condition  # each stream embeds its own timestep
    macs += sum(e.mlp[0].in_features * width + width * width for e in model.pooled_embedders.values())
    blocks = len(model.joint_blocks) + len(model.single_blocks)
    per_token = width * 3 * width + width * width + 2 * width * _mlp_hidden(model)  # qkv, out, MLP
    macs += blocks * (total * per_token + 2 * total * total * width + len(streams) * width * 6 * width)
    macs += sum(width * 2 * width + lengths[s.name] * width * (s.out_features or s.features) for s in streams)
    return macs


def _mlp_hidden(model: MMDiT) -> int:
    block = model.joint_blocks[0] if model.joint_blocks else model.single_blocks[0]
    weights = next(iter(block.streams.values())) if model.joint_blocks else block.weights
    return weights.mlp.fc1.out_features


def training_flops(model: MMDiT, lengths: Mapping[str, int]) -> int:
    """Floating-point operations of one training step (forward + backward) for one item."""
    return 6 * forward_macs(model, lengths)
