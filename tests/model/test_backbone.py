"""MMDiT: DiT's parameter counts, adaLN-Zero, padding, joint attention, conditioning and positions."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close

from mmdit.contract import StreamSpec
from mmdit.model import presets
from mmdit.model.backbone import MMDiT
from mmdit.model.blocks import JointBlock, QKNorm, SingleBlock
from mmdit.model.positions import rope_angles, rope_rotation, split_head_dim
from mmdit.model.tokens import Tokens

WIDTH, HEADS = 32, 2


def perturb(model: MMDiT, seed: int = 0) -> MMDiT:
    """Random weights everywhere (adaLN and output heads included), scaled so activations stay O(1) and
    every block does real work; the frozen sin-cos tables are left alone."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                std = p.shape[-1] ** -0.5 if p.ndim == 2 else 0.1
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def tiny(streams, joint=1, single=1, seed=0, **kwargs) -> MMDiT:
    torch.manual_seed(seed)
    model = MMDiT(streams, width=WIDTH, heads=HEADS, joint_depth=joint, single_depth=single, **kwargs)
    return perturb(model, seed)


def make_tokens(spec: StreamSpec, batch: int, length: int, g: torch.Generator) -> Tokens:
    x = torch.randn(batch, length, spec.features, generator=g)
    if spec.positions == "sincos":
        pos = torch.stack(
            [torch.randint(0, n, (batch, length), generator=g) for n in spec.grid], dim=-1
        ).float()
    else:
        pos = torch.randint(0, 12, (batch, length, spec.axes), generator=g).float()
    return Tokens(x, pos, torch.ones(batch, length, dtype=torch.bool))


def append_padding(tokens: Tokens, spec: StreamSpec, extra: int, g: torch.Generator) -> Tokens:
    """The same tokens followed by `extra` padded tokens with random values and positions (mask False)."""
    pad = make_tokens(spec, tokens.batch_size, extra, g)
    return Tokens(
        torch.cat([tokens.x, pad.x], dim=1),
        torch.cat([tokens.pos, pad.pos], dim=1),
        torch.cat([tokens.mask, torch.zeros(tokens.batch_size, extra, dtype=torch.bool)], dim=1),
    )


def changed(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return bool((a - b).abs().max() > tol)


ROPE1 = StreamSpec("a", 6, positions="rope", axes=1)
ROPE2 = StreamSpec("a", 6, positions="rope", axes=2)
ROPE3 = StreamSpec("a", 6, positions="rope", axes=3)
SINCOS = StreamSpec("a", 6, positions="sincos", axes=2, grid=(4, 5))
NONE = StreamSpec("a", 6, positions="none")
ALL_KINDS = [ROPE1, ROPE2, ROPE3, SINCOS, NONE]
KIND_IDS = ["rope1", "rope2", "rope3", "sincos", "none"]


# --- DiT parameter counts ------------------------------------------------------------------------------

DIT_COUNTS = {
    # name: (all parameters incl. the frozen position table, trainable only) — DiT paper / released code
    "DiT-S/2": (32_963_360, 32_865_056),
    "DiT-B/2": (130_512_416, 130_315_808),
    "DiT-L/2": (458_102_816, 457_840_672),
    "DiT-XL/2": (675_129_632, 674_834_720),
    "DiT-S/8": (33_148_160, 33_142_016),
}


def build_dit(name: str) -> MMDiT:
    config = presets.preset(name)
    p = config.pop("patch_size")
    image = StreamSpec("image", 4 * p * p, 8 * p * p, "sincos", 2, (32 // p, 32 // p))
    return MMDiT([image], qk_norm=False, labels={"class": 1000}, **config)


@pytest.mark.parametrize("name", list(DIT_COUNTS))
def test_dit_parameter_counts(name):
    with torch.device("meta"):
        model = build_dit(name)
    total, trainable = DIT_COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_dit_s2_builds_for_real_with_the_same_counts():
    model = build_dit("DiT-S/2")
    assert sum(p.numel() for p in model.parameters()) == DIT_COUNTS["DiT-S/2"][0]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == DIT_COUNTS["DiT-S/2"][1]
    assert len(model.single_blocks) == 12 and len(model.joint_blocks) == 0


def test_unknown_preset_lists_known_ones():
    with pytest.raises(KeyError, match="DiT-XL/2"):
        presets.preset("DiT-XXL/2")


# --- adaLN-Zero ------------------------------------------------------------------------------------------


def test_adaln_zero_blocks_are_identity_and_output_is_zero():
    torch.manual_seed(0)
    specs = [ROPE2, StreamSpec("b", 10, positions="none")]
    model = MMDiT(
        specs,
        width=WIDTH,
        heads=HEADS,
        joint_depth=2,
        single_depth=2,
        labels={"class": 5},
        pooled={"text": 7},
    )
    g = torch.Generator().manual_seed(1)
    xs = {"a": torch.randn(2, 5, WIDTH, generator=g), "b": torch.randn(2, 9, WIDTH, generator=g)}
    conds = {s: torch.randn(2, WIDTH, generator=g) for s in xs}
    rotation = rope_rotation(torch.randn(2, 14, WIDTH // HEADS // 2, generator=g))
    mask = torch.ones(2, 1, 1, 14, dtype=torch.bool)
    mask[0, ..., -3:] = False
    blocks = [*model.joint_blocks, *model.single_blocks]
    assert sum(isinstance(b, JointBlock) for b in blocks) == 2
    assert sum(isinstance(b, SingleBlock) for b in blocks) == 2
    for block in blocks:
        out = block(xs, conds, rotation, mask)
        for s in xs:
            assert torch.equal(out[s], xs[s])

    streams = {"a": make_tokens(specs[0], 2, 5, g), "b": make_tokens(specs[1], 2, 9, g)}
    out = model(
        streams,
        torch.tensor([0.3, 0.8]),
        labels={"class": torch.tensor([1, 5])},
        pooled={"text": torch.randn(2, 7, generator=g)},
    )
    assert torch.equal(out["a"], torch.zeros(2, 5, 6))
    assert torch.equal(out["b"], torch.zeros(2, 9, 10))


# --- padding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_KINDS, ids=KIND_IDS)
def test_padding_does_not_change_real_tokens(spec):
    model = tiny([spec], joint=1, single=1)
    g = torch.Generator().manual_seed(2)
    tokens = make_tokens(spec, 2, 6, g)
    t = torch.tensor([0.3, 0.7])
    reference = model({"a": tokens}, t)["a"]
    padded = model({"a": append_padding(tokens, spec, 3, g)}, t)["a"]
    assert padded.shape == (2, 9, 6)
    assert_close(padded[:, :6], reference, atol=1e-5, rtol=1e-5)


def test_ragged_batch_equals_each_item_alone():
    model = tiny([ROPE2], joint=1, single=1)
    g = torch.Generator().manual_seed(3)
    tokens = make_tokens(ROPE2, 2, 7, g)
    tokens.mask[1, 4:] = False  # item 1 has only 4 real tokens
    t = torch.tensor([0.2, 0.9])
    batched = model({"a": tokens}, t)["a"]
    for i, n in ((0, 7), (1, 4)):
        alone = Tokens(tokens.x[i : i + 1, :n], tokens.pos[i : i + 1, :n], tokens.mask[i : i + 1, :n])
        assert_close(batched[i : i + 1, :n], model({"a": alone}, t[i : i + 1])["a"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind_b", [SINCOS, NONE, ROPE3], ids=["sincos", "none", "rope3"])
def test_padding_two_streams_of_different_lengths(kind_b):
    a = ROPE2
    b = StreamSpec("b", 10, positions=kind_b.positions, axes=kind_b.axes, grid=kind_b.grid)
    model = tiny([a, b], joint=2, single=1)
    g = torch.Generator().manual_seed(4)
    streams = {"a": make_tokens(a, 2, 5, g), "b": make_tokens(b, 2, 9, g)}
    t = torch.tensor([0.4, 0.6])
    reference = model(streams, t)
    padded = model(
        {"a": append_padding(streams["a"], a, 4, g), "b": append_padding(streams["b"], b, 2, g)}, t
    )
    assert padded["a"].shape == (2, 9, 6) and padded["b"].shape == (2, 11, 10)
    assert_close(padded["a"][:, :5], reference["a"], atol=1e-5, rtol=1e-5)
    assert_close(padded["b"][:, :9], reference["b"], atol=1e-5, rtol=1e-5)


# --- joint attention across streams ----------------------------------------------------------------------

A_SPEC = StreamSpec("a", 6, out_features=12, positions="rope", axes=2)
B_SPEC = StreamSpec("b", 10, positions="none")


@pytest.mark.parametrize(("joint", "single"), [(2, 0), (0, 2), (1, 1)])
def test_information_flows_across_streams_unless_masked(joint, single):
    model = tiny([A_SPEC, B_SPEC], joint=joint, single=single)
    g = torch.Generator().manual_seed(5)
    a, b = make_tokens(A_SPEC, 2, 5, g), make_tokens(B_SPEC, 2, 9, g)
    t = torch.tensor([0.5, 0.5])
    out = model({"a": a, "b": b}, t)
    assert out["a"].shape == (2, 5, 12)
    assert out["b"].shape == (2, 9, 10)

    b_changed = b.with_x(b.x + torch.randn(b.x.shape, generator=g))
    assert changed(model({"a": a, "b": b_changed}, t)["a"], out["a"])

    # The same change confined to tokens of b that are masked out is invisible to a and to b's real tokens.
    b.mask[:, 6:] = False
    masked = model({"a": a, "b": b}, t)
    x = b.x.clone()
    x[:, 6:] += torch.randn(2, 3, 10, generator=g) * 10
    masked_changed = model({"a": a, "b": b.with_x(x)}, t)
    assert_close(masked_changed["a"], masked["a"], atol=1e-5, rtol=1e-5)
    assert_close(masked_changed["b"][:, :6], masked["b"][:, :6], atol=1e-5, rtol=1e-5)
    # ...while a change to a real token of b is still seen.
    x[:, 0] += 1.0
    assert changed(model({"a": a, "b": b.with_x(x)}, t)["a"], masked["a"])


def test_a_stream_can_run_alone():
    model = tiny([A_SPEC, B_SPEC], joint=1, single=1)
    g = torch.Generator().manual_seed(6)
    a = make_tokens(A_SPEC, 2, 5, g)
    out = model({"a": a}, torch.tensor([0.1, 0.2]))
    assert set(out) == {"a"} and out["a"].shape == (2, 5, 12)


# --- conditioning ------------------------------------------------------------------------------------


def test_per_stream_timesteps():
    model = tiny([A_SPEC, B_SPEC], joint=1, single=1)
    g = torch.Generator().manual_seed(7)
    streams = {"a": make_tokens(A_SPEC, 2, 5, g), "b": make_tokens(B_SPEC, 2, 9, g)}
    t = torch.tensor([0.2, 0.7])
    shared = model(streams, t)
    assert torch.equal(model(streams, {"a": t, "b": t})["a"], shared["a"])
    assert torch.equal(model(streams, {"a": t, "b": t})["b"], shared["b"])
    separate = model(streams, {"a": t, "b": torch.tensor([0.9, 0.05])})
    assert changed(separate["b"], shared["b"])
    # a's own time is the same, but it attends to b's tokens, which were modulated by b's time.
    assert changed(separate["a"], shared["a"])
    assert changed(model(streams, torch.tensor([0.6, 0.1]))["a"], shared["a"])


def test_label_and_pooled_conditioning():
    model = tiny([NONE], labels={"class": 4, "style": 3}, pooled={"text": 8})
    g = torch.Generator().manual_seed(8)
    streams = {"a": make_tokens(NONE, 2, 5, g)}
    t = torch.tensor([0.5, 0.5])
    labels = {"class": torch.tensor([0, 4]), "style": torch.tensor([1, 2])}
    pooled = {"text": torch.randn(2, 8, generator=g)}
    out = model(streams, t, labels=labels, pooled=pooled)

    with pytest.raises(KeyError, match="style"):
        model(streams, t, labels={"class": labels["class"]}, pooled=pooled)
    with pytest.raises(KeyError, match="colour"):
        model(streams, t, labels={**labels, "colour": torch.tensor([0, 0])}, pooled=pooled)
    with pytest.raises(KeyError, match="text"):
        model(streams, t, labels=labels)
    with pytest.raises(KeyError, match="image"):
        model(streams, t, labels=labels, pooled={**pooled, "image": torch.zeros(2, 8)})

    other_pooled = model(streams, t, labels=labels, pooled={"text": torch.randn(2, 8, generator=g)})
    assert changed(other_pooled["a"], out["a"])
    null_class = model(streams, t, labels={**labels, "class": torch.tensor([4, 4])}, pooled=pooled)
    assert changed(null_class["a"][0], out["a"][0])
    assert torch.equal(null_class["a"][1], out["a"][1])  # item 1 already had the null class


@pytest.mark.parametrize("std", [0.02, 1.0])
def test_label_embeddings_start_at_the_requested_scale(std):
    torch.manual_seed(0)
    model = MMDiT([NONE], width=64, heads=2, single_depth=1, labels={"digit": 200}, label_init_std=std)
    weights = model.label_embedders["digit"].embedding.weight
    assert weights.std().item() == pytest.approx(std, rel=0.05)


def test_number_conditioning_is_checked_and_changes_the_prediction():
    model = tiny([NONE], numbers=["seconds"])
    g = torch.Generator().manual_seed(10)
    streams = {"a": make_tokens(NONE, 2, 5, g)}
    t = torch.tensor([0.5, 0.5])
    out = model(streams, t, numbers={"seconds": torch.tensor([1.0, 2.5])})
    with pytest.raises(KeyError, match="missing \\['seconds'\\]"):
        model(streams, t)
    with pytest.raises(KeyError, match="unknown \\['frames'\\]"):
        model(streams, t, numbers={"seconds": torch.ones(2), "frames": torch.ones(2)})
    other = model(streams, t, numbers={"seconds": torch.tensor([1.0, 0.5])})
    assert torch.equal(other["a"][0], out["a"][0]) and changed(other["a"][1], out["a"][1])
    # A number embeds as the timestep does, through its own MLP.
    features = model.number_embedders["seconds"].mlp[0].in_features
    assert features == model.t_embedder.mlp[0].in_features


def test_unconditional_model_rejects_labels():
    model = tiny([NONE])
    g = torch.Generator().manual_seed(9)
    with pytest.raises(KeyError, match="class"):
        model({"a": make_tokens(NONE, 1, 3, g)}, torch.tensor([0.5]), labels={"class": torch.tensor([0])})


# --- single vs joint blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [ROPE2, SINCOS], ids=["rope2", "sincos"])
def test_one_stream_joint_blocks_equal_single_blocks(spec):
    """With one stream both kinds of block are DiT's block, so copying weights gives the same function."""
    joint = tiny([spec], joint=3, single=0, labels={"class": 3})
    single = MMDiT([spec], width=WIDTH, heads=HEADS, joint_depth=0, single_depth=3, labels={"class": 3})
    state = {}
    for key, value in joint.state_dict().items():
        if key.startswith("joint_blocks."):
            _, index, _, name, rest = key.split(".", 4)
            assert name == spec.name
            key = f"single_blocks.{index}.weights.{rest}"
        state[key] = value
    single.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(10)
    tokens = make_tokens(spec, 2, 8, g)
    tokens.mask[0, -2:] = False
    t, labels = torch.tensor([0.25, 0.75]), {"class": torch.tensor([0, 3])}
    out_joint = joint({"a": tokens}, t, labels)["a"]
    assert_close(single({"a": tokens}, t, labels)["a"], out_joint, atol=1e-6, rtol=1e-6)
    assert out_joint.abs().max() > 1e-2  # the perturbed model really computes something


# --- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(positions="rope", axes=0),
        dict(positions="rope", axes=4),
        dict(positions="sincos", axes=2),
        dict(positions="sincos", axes=1, grid=(4, 4)),
        dict(positions="learned", axes=1),
    ],
)
def test_stream_spec_validation(kwargs):
    with pytest.raises(ValueError):
        StreamSpec("a", 4, **kwargs)


def test_model_validation():
    with pytest.raises(ValueError):
        MMDiT([], width=WIDTH, heads=HEADS, single_depth=1)
    with pytest.raises(ValueError):
        MMDiT([NONE], width=WIDTH, heads=HEADS)
    with pytest.raises(ValueError):
        MMDiT([NONE], width=30, heads=4, single_depth=1)
    model = tiny([SINCOS])
    g = torch.Generator().manual_seed(11)
    tokens = make_tokens(SINCOS, 1, 3, g)
    with pytest.raises(KeyError, match="other"):
        model({"other": tokens}, torch.tensor([0.5]))
    with pytest.raises(ValueError):
        model({"a": tokens.with_x(torch.zeros(1, 3, 7))}, torch.tensor([0.5]))
    tokens.pos[0, 0] = torch.tensor([4.0, 0.0])  # outside the (4, 5) sin-cos grid
    with pytest.raises(ValueError):
        model({"a": tokens}, torch.tensor([0.5]))


# --- positions in the model ----------------------------------------------------------------------------


def test_no_positions_is_permutation_equivariant():
    model = tiny([NONE, StreamSpec("b", 10, positions="rope", axes=1)], joint=1, single=1)
    g = torch.Generator().manual_seed(12)
    a, b = make_tokens(NONE, 2, 7, g), make_tokens(model.specs["b"], 2, 4, g)
    a.mask[1, 5:] = False
    t = torch.tensor([0.3, 0.6])
    out = model({"a": a, "b": b}, t)
    perm = torch.randperm(7, generator=g)
    permuted = Tokens(a.x[:, perm], a.pos[:, perm], a.mask[:, perm])
    out_perm = model({"a": permuted, "b": b}, t)
    assert_close(out_perm["a"], out["a"][:, perm], atol=1e-5, rtol=1e-5)
    assert_close(out_perm["b"], out["b"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spec", [ROPE2, SINCOS], ids=["rope2", "sincos"])
def test_positions_travel_with_tokens(spec):
    """Permuting tokens with their positions permutes the output; permuting values alone changes it."""
    model = tiny([spec])
    g = torch.Generator().manual_seed(13)
    tokens = make_tokens(spec, 2, 6, g)
    t = torch.tensor([0.3, 0.6])
    out = model({"a": tokens}, t)["a"]
    perm = torch.randperm(6, generator=g)
    together = model({"a": Tokens(tokens.x[:, perm], tokens.pos[:, perm], tokens.mask)}, t)["a"]
    assert_close(together, out[:, perm], atol=1e-5, rtol=1e-5)
    values_only = model({"a": tokens.with_x(tokens.x[:, perm])}, t)["a"]
    assert changed(values_only, out[:, perm])


def test_rope_is_translation_invariant_in_the_model():
    model = tiny([ROPE3])
    g = torch.Generator().manual_seed(14)
    tokens = make_tokens(ROPE3, 2, 6, g)
    t = torch.tensor([0.3, 0.6])
    out = model({"a": tokens}, t)["a"]
    shifted = Tokens(tokens.x, tokens.pos + torch.tensor([3.0, -2.0, 5.0]), tokens.mask)
    assert_close(model({"a": shifted}, t)["a"], out, atol=1e-4, rtol=1e-4)
    stretched = Tokens(tokens.x, tokens.pos * 2, tokens.mask)
    assert changed(model({"a": stretched}, t)["a"], out)


def test_gradients_reach_every_trainable_parameter():
    model = tiny([A_SPEC, B_SPEC], joint=1, single=1, labels={"class": 3}, pooled={"text": 4})
    g = torch.Generator().manual_seed(15)
    out = model(
        {"a": make_tokens(A_SPEC, 2, 5, g), "b": make_tokens(B_SPEC, 2, 4, g)},
        {"a": torch.tensor([0.2, 0.4]), "b": torch.tensor([0.6, 0.8])},
        labels={"class": torch.tensor([0, 1])},
        pooled={"text": torch.randn(2, 4, generator=g)},
    )
    (out["a"].square().mean() + out["b"].square().mean()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_model_rope_rotation_per_stream():
    """Each rope stream rotates by its own positions and head split; other streams are not rotated."""
    specs = [ROPE3, StreamSpec("b", 4, positions="none"), StreamSpec("c", 4, positions="rope", axes=1)]
    model = tiny(specs)
    g = torch.Generator().manual_seed(16)
    streams = {s.name: make_tokens(s, 2, n, g) for s, n in zip(specs, (3, 4, 5), strict=True)}
    rotation = model.rope(streams, ["a", "b", "c"])
    head_dim = WIDTH // HEADS
    assert rotation.shape == (2, 1, 12, 2, head_dim)
    expected_a = rope_rotation(rope_angles(streams["a"].pos, split_head_dim(head_dim, 3)))
    assert_close(rotation[:, :, :3], expected_a)
    assert torch.equal(rotation[:, :, 3:7], rope_rotation(torch.zeros(2, 4, head_dim // 2)))
    assert_close(rotation[:, :, 7:], rope_rotation(rope_angles(streams["c"].pos, [head_dim])))
    assert model.rope({"b": streams["b"]}, ["b"]) is None


# --- single blocks over several streams ----------------------------------------------------------------


def test_single_block_modulates_each_stream_with_its_own_vector():
    torch.manual_seed(17)
    block = SingleBlock(WIDTH, HEADS, 4.0, qk_norm=True)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape) * (p.shape[-1] ** -0.5 if p.ndim == 2 else 0.1))
    g = torch.Generator().manual_seed(18)
    xs = {"a": torch.randn(2, 3, WIDTH, generator=g), "b": torch.randn(2, 4, WIDTH, generator=g)}
    c1, c2 = torch.randn(2, WIDTH, generator=g), torch.randn(2, WIDTH, generator=g)
    same = block(xs, {"a": c1, "b": c1}, None, None)
    # With one vector for both streams the block is DiT's block over the concatenated sequence.
    whole = block({"ab": torch.cat([xs["a"], xs["b"]], dim=1)}, {"ab": c1}, None, None)["ab"]
    assert_close(torch.cat([same["a"], same["b"]], dim=1), whole, atol=1e-5, rtol=1e-5)
    different = block(xs, {"a": c1, "b": c2}, None, None)
    assert changed(different["b"], same["b"])
    assert changed(different["a"], same["a"])  # a attends to b's tokens, modulated by b's vector
    # b's tokens under c2 are what a one-stream block gives them under c2, apart from attention to a.
    alone_b = block({"b": xs["b"]}, {"b": c2}, None, torch.ones(2, 1, 1, 4, dtype=torch.bool))["b"]
    masked_a = torch.cat(
        [torch.zeros(2, 1, 1, 3, dtype=torch.bool), torch.ones(2, 1, 1, 4, dtype=torch.bool)], -1
    )
    only_b = block(xs, {"a": c1, "b": c2}, None, masked_a)["b"]
    assert_close(only_b, alone_b, atol=1e-5, rtol=1e-5)


def _joint_model(**options) -> MMDiT:
    torch.manual_seed(0)
    model = MMDiT(
        [StreamSpec("a", 4, positions="rope", axes=2), StreamSpec("b", 3, positions="none")],
        width=32,
        heads=2,
        joint_depth=1,
        single_depth=1,
        labels={"y": 3},
        **options,
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


def _joint_inputs():
    g = torch.Generator().manual_seed(0)
    a = Tokens(
        torch.randn(2, 6, 4, generator=g),
        torch.randint(0, 3, (2, 6, 2), generator=g).float(),
        torch.ones(2, 6, dtype=torch.bool),
    )
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    b = Tokens(torch.randn(2, 5, 3, generator=g), torch.zeros(2, 5, 0), mask)
    return {"a": a, "b": b}, torch.tensor([0.3, 0.8]), {"y": torch.tensor([1, 3])}


def _outputs_and_grads(model):
    streams, t, labels = _joint_inputs()
    out = model(streams, t, labels)
    loss = sum(v.square().mean() for v in out.values())
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return out, grads


def test_activation_checkpointing_gives_the_eager_outputs_and_gradients():
    eager_out, eager_grads = _outputs_and_grads(_joint_model())
    out, grads = _outputs_and_grads(_joint_model(checkpointing=True))
    for s in eager_out:
        torch.testing.assert_close(out[s], eager_out[s], rtol=0, atol=0)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "backend",
    ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)],  # inductor: minutes on 2 cores
)
def test_compiled_blocks_give_the_eager_outputs(backend):
    """aot_eager traces the blocks as torch.compile does, and runs the traced graphs; inductor (model.compile:
    true) also fuses and reorders float operations: agreement to 1e-5 relative, gradients to 1e-4."""
    eager_out, eager_grads = _outputs_and_grads(_joint_model())
    compiled = _joint_model(compile=backend == "inductor")
    if backend != "inductor":
        for block in [*compiled.joint_blocks, *compiled.single_blocks]:
            block.compile(backend=backend)
    assert set(compiled.state_dict()) == set(_joint_model().state_dict())
    out, grads = _outputs_and_grads(compiled)
    for s in eager_out:
        torch.testing.assert_close(out[s], eager_out[s], rtol=1e-5, atol=1e-5)
    for g, e in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_qk_norm_in_bf16_is_torchs_fused_rms_norm_within_bf16_rounding():
    """Under autocast q and k arrive in bf16 beside a float32 weight; QKNorm must neither fall back to
    torch's unfused path (which warns: warn_always makes that visible every time) nor change the result."""
    torch.manual_seed(19)
    ours, torchs = QKNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
    torchs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 5, 16)
    assert torch.equal(ours(x), torchs(x))
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with pytest.warns(UserWarning, match="Mismatch dtype"):
            torchs(x.bfloat16())  # the warning this test would miss if it could not see it
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = ours(x.bfloat16())
    finally:
        torch.set_warn_always(was)
    assert out.dtype == torch.bfloat16
    assert_close(out.float(), torchs(x), atol=2e-2, rtol=2e-2)
