"""DiT checkpoints -> mmdit's DiT: facebookresearch/DiT's layout and diffusers' DiTTransformer2DModel.

Both become one image stream with DiT's frozen sin-cos table, `depth` single blocks, one label ("class") and,
with a learned variance, twice the token features out. diffusers' port differs from the original in two
numbers that change the function, so the converted model keeps them: its timestep frequencies use
`downscale_freq_shift=1` (time_frequency_shift) and the LayerNorm before each MLP uses eps = config.norm_eps
(1e-5; the original uses 1e-6). diffusers also stores the timestep and class embedders once per block; mmdit
keeps one copy and refuses copies that differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mmdit.convert.rules import (
    Rule,
    computed,
    concat,
    conv_to_linear,
    copy,
    learned_sigma_rows,
    linear_to_conv,
    shared,
)
from mmdit.model.presets import DIT

HEADS_BY_WIDTH = {d["width"]: d["heads"] for d in DIT.values()}


def is_original_layout(state: Mapping[str, Tensor]) -> bool:
    return "x_embedder.proj.weight" in state


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({key.split(".")[1] for key in state if key.startswith(prefix)})


def _output_rules(prefix: str, patch: int, channels: int, out_channels: int, target: str) -> list[Rule]:
    """The final linear: with a learned variance (out = 2C), rows regrouped into (prediction, variance)."""
    if out_channels == channels:
        return [copy(f"{prefix}.{p}", f"{target}.{p}") for p in ("weight", "bias")]
    if out_channels != 2 * channels:
        raise ValueError(
            f"DiT output channels {out_channels} are neither C={channels} nor 2C (learned sigma)"
        )
    forward, inverse = learned_sigma_rows(patch, channels)
    return [copy(f"{prefix}.{p}", f"{target}.{p}", forward, inverse) for p in ("weight", "bias")]


def _block_rules(block: str, target: str, qkv: list[str] | str, proj: str, fc1: str, fc2: str, mod: str):
    rules = []
    for p in ("weight", "bias"):
        if isinstance(qkv, str):
            rules.append(copy(f"{block}.{qkv}.{p}", f"{target}.qkv.{p}"))
        else:
            rules.append(concat([f"{block}.{name}.{p}" for name in qkv], f"{target}.qkv.{p}"))
        rules += [
            copy(f"{block}.{proj}.{p}", f"{target}.proj.{p}"),
            copy(f"{block}.{fc1}.{p}", f"{target}.mlp.fc1.{p}"),
            copy(f"{block}.{fc2}.{p}", f"{target}.mlp.fc2.{p}"),
            copy(f"{block}.{mod}.{p}", f"{target}.modulation.1.{p}"),
        ]
    return rules


def dit_conversion(
    state: Mapping[str, Tensor], config: Mapping[str, Any] | None = None, heads: int | None = None
) -> tuple[dict[str, Any], list[Rule]]:
    """A DiT state dict (either layout) -> (description, rules).

    description: {"model": MMDiT keyword arguments, "image": image-stream options, "classes": int,
    "learn_sigma": bool}. `heads` is needed for an original-layout model whose width is not a DiT preset's
    (the checkpoint's shapes do not say it); diffusers' layout reads it from `config`."""
    original = is_original_layout(state)
    if original:
        conv = state["x_embedder.proj.weight"]
        depth = _count_blocks(state, "blocks.")
        table_rows = state["y_embedder.embedding_table.weight"].shape[0]
        out = state["final_layer.linear.weight"].shape[0]
    else:
        if config is None:
            raise ValueError(
                "a diffusers DiT checkpoint needs its config.json (num_attention_heads, norm_eps)"
            )
        conv = state["pos_embed.proj.weight"]
        depth = _count_blocks(state, "transformer_blocks.")
        table_rows = state["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"].shape[0]
        out = state["proj_out_2.weight"].shape[0]
        heads = config["num_attention_heads"]
    width, channels, patch = conv.shape[0], conv.shape[1], conv.shape[2]
    heads = heads or HEADS_BY_WIDTH.get(width)
    if heads is None:
        raise ValueError(f"DiT width {width} is not a preset's; give the number of attention heads")
    out_channels = out // (patch * patch)
    # The null class is the last row of the table (classes + 1 rows) whenever the model was trained with
    # label dropout, as every released DiT was.
    classes = table_rows - 1
    model = dict(
        joint_depth=0,
        single_depth=depth,
        width=width,
        heads=heads,
        qk_norm=False,
        time_frequency_shift=0.0 if original else 1.0,
        mlp_norm_eps=1e-6 if original else float(config.get("norm_eps", 1e-5)),
    )
    if original:
        tokens = state["pos_embed"].shape[1]
        rules = _original_rules(depth, patch, channels, out_channels)
    else:
        tokens = (int(config["sample_size"]) // patch) ** 2
        rules = _diffusers_rules(depth, patch, channels, out_channels)
    side = math.isqrt(tokens)
    image = dict(channels=channels, patch_size=patch, size=[side * patch, side * patch], positions="sincos")
    description = dict(model=model, image=image, classes=classes, learn_sigma=out_channels == 2 * channels)
    return description, rules


def _embed_rules(source: str, channels: int) -> list[Rule]:
    return [
        copy(f"{source}.weight", "inputs.image.weight", conv_to_linear, linear_to_conv(channels)),
        copy(f"{source}.bias", "inputs.image.bias"),
    ]


def _original_rules(depth: int, patch: int, channels: int, out_channels: int) -> list[Rule]:
    rules = _embed_rules("x_embedder.proj", channels)
    rules.append(
        copy(
            "pos_embed",
            "pos_tables.image.table",
            lambda t: t[0].unflatten(0, (math.isqrt(t.shape[1]), -1)),
            lambda t: t.flatten(0, 1)[None],
        )
    )
    for p in ("weight", "bias"):
        rules += [copy(f"t_embedder.mlp.{i}.{p}", f"t_embedder.mlp.{i}.{p}") for i in (0, 2)]
        rules.append(copy(f"final_layer.adaLN_modulation.1.{p}", f"outputs.image.modulation.1.{p}"))
    rules.append(copy("y_embedder.embedding_table.weight", "label_embedders.class.embedding.weight"))
    for i in range(depth):
        rules += _block_rules(
            f"blocks.{i}", f"single_blocks.{i}.weights", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2",
            "adaLN_modulation.1",
        )  # fmt: skip
    rules += _output_rules("final_layer.linear", patch, channels, out_channels, "outputs.image.linear")
    return rules


def _diffusers_rules(depth: int, patch: int, channels: int, out_channels: int) -> list[Rule]:
    # diffusers recomputes DiT's table at load time (a non-persistent buffer); mmdit's is the same table.
    rules = [*_embed_rules("pos_embed.proj", channels), computed("pos_tables.image.table")]
    emb = [f"transformer_blocks.{i}.norm1.emb" for i in range(depth)]
    for p in ("weight", "bias"):
        for ours, theirs in ((0, "linear_1"), (2, "linear_2")):
            rules.append(
                shared([f"{e}.timestep_embedder.{theirs}.{p}" for e in emb], f"t_embedder.mlp.{ours}.{p}")
            )
        rules.append(copy(f"proj_out_1.{p}", f"outputs.image.modulation.1.{p}"))
    rules.append(
        shared(
            [f"{e}.class_embedder.embedding_table.weight" for e in emb],
            "label_embedders.class.embedding.weight",
        )
    )
    for i in range(depth):
        rules += _block_rules(
            f"transformer_blocks.{i}", f"single_blocks.{i}.weights",
            ["attn1.to_q", "attn1.to_k", "attn1.to_v"], "attn1.to_out.0", "ff.net.0.proj", "ff.net.2",
            "norm1.linear",
        )  # fmt: skip
    rules += _output_rules("proj_out_2", patch, channels, out_channels, "outputs.image.linear")
    return rules
