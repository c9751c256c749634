"""Stable Diffusion 3 (diffusers' SD3Transformer2DModel) -> an MMDiT with an image stream and a text stream.

SD3's joint block is mmdit's JointBlock: per-stream adaLN-Zero, q/k/v (fused here), RMS q/k norms, output
projection and MLP, one attention over [image, text]. The pooled text vector is a pooled condition, the text
sequence a stream without positions, and the image stream reads the centre of a `pos_embed_max_size` sin-cos
table.

The last block is `context_pre_only`: the text stream is read but not updated. Its 2-vector modulation
(scale, shift) fills the attention shift and scale of mmdit's 6-vector one; the gates and the unused text
output projection and MLP of that block are zeros, so the text stream passes through it unchanged, and the
text stream's output head (which SD3 does not have) is zeros too. SD3.5's dual attention (`attn2`) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmdit.convert.rules import (
    Rule,
    concat,
    conv_to_linear,
    copy,
    linear_to_conv,
    swap_halves,
    zeros_for,
)

BLOCK_STREAMS = {
    "image": dict(q="attn.to_q", k="attn.to_k", v="attn.to_v", out="attn.to_out.0", ff="ff",
                  mod="norm1.linear", q_norm="attn.norm_q", k_norm="attn.norm_k"),
    "text": dict(q="attn.add_q_proj", k="attn.add_k_proj", v="attn.add_v_proj", out="attn.to_add_out",
                 ff="ff_context", mod="norm1_context.linear", q_norm="attn.norm_added_q",
                 k_norm="attn.norm_added_k"),
}  # fmt: skip


def _pre_only_modulation(width: int) -> tuple:
    """(scale, shift) [2D, ...] <-> mmdit's six vectors [6D, ...] with only the attention's shift, scale."""

    def forward(x: Tensor) -> Tensor:
        scale, shift = x.chunk(2, dim=0)
        rest = torch.zeros((4 * width, *x.shape[1:]), dtype=x.dtype)
        return torch.cat([shift, scale, rest], dim=0)

    def inverse(x: Tensor) -> Tensor:
        shift, scale = x[:width], x[width : 2 * width]
        return torch.cat([scale, shift], dim=0)

    return forward, inverse


def _block_rules(i: int, width: int, qk_norm: bool, pre_only: bool) -> list[Rule]:
    rules = []
    for stream, names in BLOCK_STREAMS.items():
        src, dst = f"transformer_blocks.{i}", f"joint_blocks.{i}.streams.{stream}"
        read_only = pre_only and stream == "text"
        for p in ("weight", "bias"):
            rules.append(concat([f"{src}.{names[x]}.{p}" for x in "qkv"], f"{dst}.qkv.{p}"))
            if read_only:
                forward, inverse = _pre_only_modulation(width)
                rules.append(copy(f"{src}.{names['mod']}.{p}", f"{dst}.modulation.1.{p}", forward, inverse))
                unused = [f"{dst}.proj.{p}", f"{dst}.mlp.fc1.{p}", f"{dst}.mlp.fc2.{p}"]
                rules += [zeros_for(key) for key in unused]
                continue
            rules += [
                copy(f"{src}.{names['mod']}.{p}", f"{dst}.modulation.1.{p}"),
                copy(f"{src}.{names['out']}.{p}", f"{dst}.proj.{p}"),
                copy(f"{src}.{names['ff']}.net.0.proj.{p}", f"{dst}.mlp.fc1.{p}"),
                copy(f"{src}.{names['ff']}.net.2.{p}", f"{dst}.mlp.fc2.{p}"),
            ]
        if qk_norm:
            rules += [copy(f"{src}.{names[n]}.weight", f"{dst}.{n}.weight") for n in ("q_norm", "k_norm")]
    return rules


def sd3_conversion(
    state: Mapping[str, Tensor], config: Mapping[str, Any]
) -> tuple[dict[str, Any], list[Rule]]:
    """diffusers SD3 state dict + its config.json -> (description, rules).

    description: {"model": MMDiT keyword arguments, "image": image-stream options, "text_features": int,
    "pooled_features": int}."""
    dual = config.get("dual_attention_layers") or sorted(
        {int(k.split(".")[1]) for k in state if ".attn2." in k}
    )
    if dual:
        raise ValueError(
            f"SD3.5 dual attention (attn2 in blocks {list(dual)}) is not supported yet: mmdit's joint block "
            "has one attention per block"
        )
    qk_norm = config.get("qk_norm")
    if qk_norm not in (None, "rms_norm"):
        raise ValueError(f"SD3 qk_norm {qk_norm!r} is not supported; mmdit's QK-norm is RMS (rms_norm)")
    heads, head_dim = int(config["num_attention_heads"]), int(config["attention_head_dim"])
    width, depth = heads * head_dim, int(config["num_layers"])
    if int(config.get("caption_projection_dim", width)) != width:
        raise ValueError(
            f"caption_projection_dim {config['caption_projection_dim']} must equal the width {width}"
        )
    channels, patch = int(config["in_channels"]), int(config["patch_size"])
    out_channels = int(config.get("out_channels") or channels)
    max_size = config.get("pos_embed_max_size") or int(config["sample_size"]) // patch
    rules = [
        copy("pos_embed.proj.weight", "inputs.image.weight", conv_to_linear, linear_to_conv(channels)),
        copy("pos_embed.proj.bias", "inputs.image.bias"),
        copy(
            "pos_embed.pos_embed",
            "pos_tables.image.table",
            lambda t: t[0].unflatten(0, (max_size, max_size)),
            lambda t: t.flatten(0, 1)[None],
        ),
    ]
    for p in ("weight", "bias"):
        rules += [
            copy(f"time_text_embed.timestep_embedder.linear_1.{p}", f"t_embedder.mlp.0.{p}"),
            copy(f"time_text_embed.timestep_embedder.linear_2.{p}", f"t_embedder.mlp.2.{p}"),
            copy(f"time_text_embed.text_embedder.linear_1.{p}", f"pooled_embedders.pooled.mlp.0.{p}"),
            copy(f"time_text_embed.text_embedder.linear_2.{p}", f"pooled_embedders.pooled.mlp.2.{p}"),
            copy(f"context_embedder.{p}", f"inputs.text.{p}"),
            copy(f"norm_out.linear.{p}", f"outputs.image.modulation.1.{p}", swap_halves, swap_halves),
            copy(f"proj_out.{p}", f"outputs.image.linear.{p}"),
            zeros_for(f"outputs.text.modulation.1.{p}"),
            zeros_for(f"outputs.text.linear.{p}"),
        ]
    for i in range(depth):
        rules += _block_rules(i, width, qk_norm is not None, pre_only=i == depth - 1)
    model = dict(joint_depth=depth, single_depth=0, width=width, heads=heads, qk_norm=qk_norm is not None)
    image = dict(channels=channels, out_channels=out_channels, patch_size=patch, grid=[max_size, max_size])
    description = dict(
        model=model,
        image=image,
        text_features=int(config["joint_attention_dim"]),
        pooled_features=int(config["pooled_projection_dim"]),
    )
    return description, rules
