"""MMDiT: joint blocks (per-stream weights, one attention) followed by single blocks (shared weights).

One stream and only single blocks is the classic DiT; two streams and only joint blocks is SD3's MMDiT;
both kinds in sequence is the Flux / Open-Sora 2 design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmdit.contract import StreamSpec
from mmdit.model.attention_layouts import LAYOUTS, block_masks
from mmdit.model.blocks import FinalLayer, JointBlock, SingleBlock
from mmdit.model.embeddings import LabelEmbedder, PooledEmbedder, TimestepEmbedder
from mmdit.model.positions import SinCosTable, rope_angles, rope_rotation, split_head_dim
from mmdit.model.tokens import Tokens

POOLS = ("none", "embedded", "joint")
"""Where clean input streams are pooled into the adaLN vector (`MMDiT`'s `pool`)."""


class MMDiT(nn.Module):
    """The shared diffusion transformer.

    Conditioning: each stream's timestep embedding plus the sum of the label, pooled-vector and number
    embeddings makes that stream's adaLN vector [B, width]. Numbers (a clip's duration in seconds, a frame
    count) are embedded as the timestep is: sinusoidal features of value * 1000, then an MLP. Sequence
    conditioning (text, another modality) is simply another stream.

    `attention` is the layout of `mmdit.model.attention_layouts`: "full" joint attention, or "factorised"
    blocks alternating spatial and temporal attention over 3-axis streams (Latte).

    `time_frequency_shift` and `mlp_norm_eps` exist for diffusers' DiT port, which differs from the original
    DiT in both (see `mmdit.convert.dit`); the defaults are DiT's and SD3's. `mlp_activation`: "gelu_tanh"
    (DiT's, SD3's) or the exact "gelu", faster on the CPU in eager mode (`mmdit.model.activations`).

    pool: how clean input streams (a caption for caption -> image, an image for image -> sound) also reach
    the adaLN vector, as SD3 adds CLIP's pooled text embedding to the timestep embedding: "none" (only
    through attention), "embedded" (the masked mean of a clean stream's embedded tokens, for every block)
    or "joint" (the masked mean of its tokens after the joint blocks, for the single blocks and the output
    layers). Each stream of `poolable` gets its own MLP (`PooledEmbedder`); `forward(clean=...)` names the
    streams given clean in a call, and only those are pooled, so a generated stream never is.

    checkpointing: recompute each block's activations in the backward pass instead of keeping them (memory
    for compute: about one extra forward). compile: `torch.compile` each block (the repeated unit, so one
    compilation serves every block of a kind); the state dict keeps its keys.
    """

    def __init__(
        self,
        streams: Sequence[StreamSpec],
        width: int,
        heads: int,
        joint_depth: int = 0,
        single_depth: int = 0,
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        labels: Mapping[str, int] | None = None,
        pooled: Mapping[str, int] | None = None,
        numbers: Sequence[str] = (),
        rope_theta: float = 10000.0,
        time_frequency_shift: float = 0.0,
        mlp_norm_eps: float = 1e-6,
        mlp_activation: str = "gelu_tanh",
        attention: str = "full",
        checkpointing: bool = False,
        compile: bool = False,
        label_init_std: float = 1.0,
        pool: str = "none",
        poolable: Sequence[str] = (),
    ):
        super().__init__()
        if not streams:
            raise ValueError("MMDiT needs at least one stream")
        if joint_depth + single_depth < 1:
            raise ValueError("MMDiT needs at least one block (joint_depth + single_depth >= 1)")
        self.specs = {s.name: s for s in streams}
        if attention not in LAYOUTS:
            raise ValueError(f"attention must be one of {LAYOUTS}, got {attention!r}")
        self.attention = attention
        self.width, self.heads, self.rope_theta = width, heads, rope_theta
        head_dim = width // heads
        self.rope_axes_dim = {
            s.name: split_head_dim(head_dim, s.axes) for s in streams if s.positions == "rope"
        }
        self.inputs = nn.ModuleDict(
            {
                s.name: nn.Embedding(s.vocab, width) if s.vocab else nn.Linear(s.features, width)
                for s in streams
            }
        )
        self.pos_tables = nn.ModuleDict(
            {s.name: SinCosTable(s.grid, width) for s in streams if s.positions == "sincos"}
        )
        self.t_embedder = TimestepEmbedder(width, frequency_shift=time_frequency_shift)
        self.label_embedders = nn.ModuleDict({k: LabelEmbedder(n, width) for k, n in (labels or {}).items()})
        self.pooled_embedders = nn.ModuleDict(
            {k: PooledEmbedder(d, width) for k, d in (pooled or {}).items()}
        )
        self.number_embedders = nn.ModuleDict({k: TimestepEmbedder(width) for k in numbers})
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        unknown = set(poolable) - set(self.specs)
        if unknown:
            raise KeyError(
                f"poolable streams {sorted(unknown)} are not streams of this model {list(self.specs)}"
            )
        self.pool = pool
        self.input_pools = nn.ModuleDict(
            {s: PooledEmbedder(width, width) for s in poolable} if pool != "none" else {}
        )
        # The block before which the pooled vectors join the conditioning (len(blocks): the output layers).
        self.pool_index = 0 if pool == "embedded" else joint_depth
        names = list(self.specs)
        block = dict(
            mlp_ratio=mlp_ratio, qk_norm=qk_norm, mlp_norm_eps=mlp_norm_eps, mlp_activation=mlp_activation
        )
        self.joint_blocks = nn.ModuleList(
            JointBlock(names, width, heads, **block) for _ in range(joint_depth)
        )
        self.single_blocks = nn.ModuleList(SingleBlock(width, heads, **block) for _ in range(single_depth))
        self.outputs = nn.ModuleDict(
            {s.name: FinalLayer(width, s.vocab or s.out_features or s.features) for s in streams}
        )
        self.checkpointing = checkpointing
        self.initialize(label_init_std)
        if compile:
            for block in [*self.joint_blocks, *self.single_blocks]:
                block.compile()

    def initialize(self, label_init_std: float = 1.0) -> None:
        """DiT's initialisation: Xavier-uniform linears with zero bias, N(0, 0.02) embeddings, and zeros
        for every adaLN modulation and output projection (so the network starts as the identity map into a
        zero prediction), except the label embeddings: N(0, `label_init_std`²), by default nn.Embedding's
        N(0, 1) rather than DiT's 0.02. At 0.02 a label is a small part of the conditioning vector beside
        the timestep's, which a label that explains little of the loss (a small digit anywhere in a clip, a
        new modality's class) does not outgrow in a CPU budget; at 1.0 it conditions from the start, at
        the same image-digits quality (docs/results.md#label-initialisation)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for embedder in self.label_embedders.values():
            nn.init.normal_(embedder.embedding.weight, std=label_init_std)
        for table in self.inputs.values():
            if isinstance(table, nn.Embedding):
                nn.init.normal_(table.weight, std=0.02)
        for embedder in (self.t_embedder, *self.number_embedders.values()):
            for linear in (embedder.mlp[0], embedder.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02)
        zeroed = [block.streams.values() for block in self.joint_blocks]
        zeroed += [[block.weights] for block in self.single_blocks]
        for weights in (w for group in zeroed for w in group):
            nn.init.zeros_(weights.modulation[1].weight)
            nn.init.zeros_(weights.modulation[1].bias)
        for head in self.outputs.values():
            for linear in (head.modulation[1], head.linear):
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)

    def conditioning(
        self,
        batch_size: int,
        labels: Mapping[str, Tensor] | None,
        pooled: Mapping[str, Tensor] | None,
        device: torch.device,
        numbers: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """The stream-independent part of the adaLN vector: [B, width]."""
        labels, pooled, numbers = labels or {}, pooled or {}, numbers or {}
        for given, expected, kind in (
            (labels, self.label_embedders, "label"),
            (pooled, self.pooled_embedders, "pooled"),
            (numbers, self.number_embedders, "number"),
        ):
            missing, unknown = set(expected) - set(given), set(given) - set(expected)
            if missing or unknown:
                raise KeyError(
                    f"{kind} conditions: model takes {sorted(expected)}, got {sorted(given)}"
                    f" (missing {sorted(missing)}, unknown {sorted(unknown)})"
                )
        cond = torch.zeros(batch_size, self.width, device=device)
        for key, embedder in self.label_embedders.items():
            cond = cond + embedder(labels[key])
        for key, embedder in self.pooled_embedders.items():
            cond = cond + embedder(pooled[key])
        for key, embedder in self.number_embedders.items():
            cond = cond + embedder(numbers[key].to(device))
        return cond

    def forward(
        self,
        streams: Mapping[str, Tokens],
        t: Tensor | Mapping[str, Tensor],
        labels: Mapping[str, Tensor] | None = None,
        pooled: Mapping[str, Tensor] | None = None,
        numbers: Mapping[str, Tensor] | None = None,
        structure: Tensor | None = None,
        items: Tensor | None = None,
        clean: Sequence[str] = (),
    ) -> dict[str, Tensor]:
        """Predict, for each stream given, a tensor [B, N_s, out_features_s] (logits [B, N_s, vocab] for a
        discrete stream).

        streams: {name: Tokens}, any subset of the model's streams (concatenated in the model's order).
        t:       [B] time in [0, 1] shared by all streams, or {name: [B]} one time per stream.
        labels:  {name: [B] long} class indices (the null index for "unconditional").
        pooled:  {name: [B, dim]} pooled vectors (zeros for "unconditional").
        numbers: {name: [B] float} scalar conditions (e.g. seconds); never dropped for guidance.
        structure: [B, N, N] bool over the concatenated tokens, True where a query may see a key (causal text,
                 roles; see `mmdit.model.masks`); None lets every real token see every other.
        items:   packed rows (`mmdit.model.packing`, one stream): [R, N] the item of each token, -1 for
                 padding.
                 Then t, labels, pooled and numbers are per item ([I]), and tokens only see their own item's.
        clean:   the streams given clean (inputs at model time 0, not generated): with `pool` set, their
                 masked means condition every stream (see the class docstring); ignored at pool "none".
        """
        unknown = set(streams) - set(self.specs)
        if unknown:
            raise KeyError(f"unknown streams {sorted(unknown)}; this model has {list(self.specs)}")
        names = [s for s in self.specs if s in streams]
        first = streams[names[0]]
        times = t if isinstance(t, Mapping) else dict.fromkeys(names, t)
        if items is not None:
            if len(names) > 1:
                raise ValueError(f"packed rows carry one stream; got {names}")
            same_item = items[:, :, None] == items[:, None, :]
            structure = same_item if structure is None else structure & same_item
        conditioned = first.batch_size if items is None else len(times[names[0]])
        shared = self.conditioning(conditioned, labels, pooled, first.x.device, numbers)
        conds = {s: self.t_embedder(times[s]) + shared for s in names}
        xs = {}
        for s in names:
            tokens = streams[s]
            if tokens.discrete != (self.specs[s].vocab is not None):
                kind = "ids" if tokens.discrete else "continuous values"
                raise ValueError(
                    f"stream {s!r}: tokens carry {kind}, which this model's stream does not take"
                )
            if tokens.features != self.specs[s].features:
                raise ValueError(
                    f"stream {s!r}: tokens have F={tokens.features}, model expects {self.specs[s].features}"
                )
            xs[s] = self.inputs[s](tokens.x)
            if s in self.pos_tables:
                xs[s] = xs[s] + self.pos_tables[s](tokens.pos)
        pooled_streams = self.pooled_streams(streams, clean, structure)
        rotation = self.rope(streams, names)
        masks = block_masks(self.attention, [streams[s] for s in names], structure)
        blocks = [*self.joint_blocks, *self.single_blocks]
        for i, block in enumerate(blocks):
            if i == self.pool_index and pooled_streams:
                conds = self.add_pooled(conds, xs, streams, pooled_streams)
            mask = masks[i % len(masks)]
            if self.checkpointing and torch.is_grad_enabled():
                xs = checkpoint(block, xs, conds, rotation, mask, items, use_reentrant=False)
            else:
                xs = block(xs, conds, rotation, mask, items)
        if self.pool_index == len(blocks) and pooled_streams:
            conds = self.add_pooled(conds, xs, streams, pooled_streams)
        return {s: self.outputs[s](xs[s], conds[s], items) for s in names}

    def pooled_streams(
        self, streams: Mapping[str, Tokens], clean: Sequence[str], structure: Tensor | None
    ) -> list[str]:
        """The streams of this call whose pooled vectors condition it: the clean ones, when pooling is on.
        A clean stream the model has no pooling MLP for, or pooling after the joint blocks with generated
        streams present but no attention structure (the clean tokens would see the generated ones, which
        would leak into the pooled vector), is an error."""
        if self.pool == "none" or not clean:
            return []
        unknown = [s for s in clean if s not in streams]
        if unknown:
            raise KeyError(f"clean streams {unknown} are not among this call's streams {list(streams)}")
        unpooled = [s for s in clean if s not in self.input_pools]
        if unpooled:
            raise KeyError(
                f"clean streams {unpooled} have no pooling MLP; this model pools {list(self.input_pools)}"
            )
        if self.pool == "joint" and structure is None and set(streams) - set(clean):
            raise ValueError(
                "pool 'joint' needs the attention structure of the roles (mmdit.model.masks) when generated "
                "streams take part: without it the clean tokens see the generated ones"
            )
        return [s for s in self.specs if s in clean]

    def add_pooled(
        self,
        conds: Mapping[str, Tensor],
        xs: Mapping[str, Tensor],
        streams: Mapping[str, Tokens],
        pooled_streams: Sequence[str],
    ) -> dict[str, Tensor]:
        """conds {stream: [B, width]} plus, for each pooled stream, its MLP of the masked mean of its
        tokens xs[s] [B, N_s, width] over real tokens (mask [B, N_s]): padding changes nothing. The mean is
        layer-normed first, so its scale does not depend on the tokens' (embedded ids start at N(0, 0.02²)).
        """
        extra = 0
        for s in pooled_streams:
            weight = streams[s].mask.to(xs[s].dtype)[..., None]
            mean = (xs[s] * weight).sum(1) / weight.sum(1).clamp_min(1)
            extra = extra + self.input_pools[s](F.layer_norm(mean, (self.width,)))
        return {s: c + extra for s, c in conds.items()}

    def rope(self, streams: Mapping[str, Tokens], names: list[str]) -> Tensor | None:
        """The rotary rotation of the concatenated sequence, `rope_rotation` [B, 1, N, 2, head_dim] of
        angles [B, N, head_dim / 2]; angle zero (no rotation) on the tokens of streams that use another
        position scheme. None when no stream uses rotary positions."""
        if not any(s in self.rope_axes_dim for s in names):
            return None
        parts = []
        for s in names:
            tokens = streams[s]
            if s in self.rope_axes_dim:
                parts.append(rope_angles(tokens.pos, self.rope_axes_dim[s], self.rope_theta))
            else:
                half = self.width // self.heads // 2
                parts.append(tokens.x.new_zeros(tokens.batch_size, tokens.length, half, dtype=torch.float32))
        return rope_rotation(torch.cat(parts, dim=1))
