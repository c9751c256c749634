"""Rotary embeddings and DiT's fixed 2D sin-cos table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from mmdit.model.positions import SinCosTable, apply_rope, rope_angles, rope_rotation, split_head_dim

HEAD_DIM = 24


def rotate(x: torch.Tensor, pos: torch.Tensor, axes: int) -> torch.Tensor:
    """x: [B, H, N, D], pos: [B, N, A] -> x rotated by the rotary angles of pos."""
    return apply_rope(x, rope_rotation(rope_angles(pos, split_head_dim(x.shape[-1], axes))))


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_rope_score_depends_only_on_relative_offset(axes):
    g = torch.Generator().manual_seed(axes)
    q = torch.randn(1, 1, 1, HEAD_DIM, generator=g)
    k = torch.randn(1, 1, 1, HEAD_DIM, generator=g)
    p = torch.randint(-10, 10, (1, 1, axes), generator=g).float()
    r = torch.randint(-10, 10, (1, 1, axes), generator=g).float()

    def score(p_q, p_k):
        return (rotate(q, p_q, axes) * rotate(k, p_k, axes)).sum()

    base = score(p, r)
    for _ in range(5):
        d = torch.randint(-20, 20, (1, 1, axes), generator=g).float()
        assert_close(score(p + d, r + d), base, atol=1e-4, rtol=1e-4)
    fractional = torch.rand(1, 1, axes, generator=g) * 3
    assert_close(score(p + fractional, r + fractional), base, atol=1e-4, rtol=1e-4)
    # Moving only the query along any one axis changes the relative offset, so the score must change.
    for axis in range(axes):
        step = torch.zeros(1, 1, axes)
        step[..., axis] = 1.0
        assert (score(p + step, r) - base).abs() > 1e-3, f"axis {axis} has no effect on the score"


@pytest.mark.parametrize("axes", [1, 2, 3])
def test_rope_attention_scores_are_translation_invariant(axes):
    """All tokens shifted together: the [N, N] score matrix is unchanged; keys shifted alone: changed."""
    g = torch.Generator().manual_seed(10 + axes)
    q = torch.randn(2, 3, 7, HEAD_DIM, generator=g)
    k = torch.randn(2, 3, 7, HEAD_DIM, generator=g)
    pos = torch.randint(0, 16, (2, 7, axes), generator=g).float()
    shift = torch.randint(-30, 30, (2, 1, axes), generator=g).float()

    def scores(p_q, p_k):
        return rotate(q, p_q, axes) @ rotate(k, p_k, axes).transpose(-1, -2)

    base = scores(pos, pos)
    assert_close(scores(pos + shift, pos + shift), base, atol=1e-4, rtol=1e-4)
    assert (scores(pos, pos + 1.0) - base).abs().max() > 1e-2


def test_rope_at_position_zero_is_identity_and_preserves_norms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, HEAD_DIM, generator=g)
    assert_close(rotate(x, torch.zeros(2, 9, 3), 3), x)
    angles = torch.randn(2, 9, HEAD_DIM // 2, generator=g) * 100
    rotated = apply_rope(x, rope_rotation(angles))
    assert not torch.allclose(rotated, x)
    assert_close(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)
    # Each channel pair is rotated on its own, so each pair's norm is kept too.
    assert_close(
        rotated.unflatten(-1, (-1, 2)).norm(dim=-1),
        x.unflatten(-1, (-1, 2)).norm(dim=-1),
        atol=1e-5,
        rtol=1e-5,
    )


def test_rope_rotates_each_channel_pair_by_its_angle():
    """Each pair (x0, x1) becomes the textbook rotation (x0 cos - x1 sin, x0 sin + x1 cos), computed here
    on the strided halves rather than on pairs: the same float32 products and sums, so the same bits."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, HEAD_DIM, generator=g)
    angles = torch.randn(2, 9, HEAD_DIM // 2, generator=g) * 10
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    expected = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    assert torch.equal(apply_rope(x, rope_rotation(angles)), expected)


def test_rope_keeps_dtype():
    x = torch.randn(1, 2, 3, 8, dtype=torch.bfloat16)
    assert apply_rope(x, rope_rotation(torch.rand(1, 3, 4))).dtype == torch.bfloat16


def test_rope_angles_checks_axes():
    with pytest.raises(ValueError):
        rope_angles(torch.zeros(1, 4, 2), [8, 8, 8])


@pytest.mark.parametrize("axes", [1, 2, 3])
@pytest.mark.parametrize("head_dim", [8, 16, 24, 32, 48, 64, 72, 96, 128])
def test_split_head_dim(head_dim, axes):
    parts = split_head_dim(head_dim, axes)
    assert len(parts) == axes
    assert sum(parts) == head_dim
    assert all(part % 2 == 0 and part > 0 for part in parts)


@pytest.mark.parametrize("head_dim", [7, 15, 63])
def test_split_head_dim_rejects_odd(head_dim):
    with pytest.raises(ValueError):
        split_head_dim(head_dim, 1)


def test_split_head_dim_rejects_axes_without_channels():
    """A head too narrow to give every axis a channel pair would silently ignore some coordinates."""
    with pytest.raises(ValueError):
        split_head_dim(4, 3)


# --- DiT / MAE's 2D sin-cos table, written out independently with numpy -------------------------------


def mae_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(dim: int, grid_hw: tuple[int, int]) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed, generalised to a rectangular grid: rows in row-major (h, w) order."""
    grid_h = np.arange(grid_hw[0], dtype=np.float32)
    grid_w = np.arange(grid_hw[1], dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first, as in MAE
    grid = np.stack(grid, axis=0).reshape(2, 1, grid_hw[0], grid_hw[1])
    emb_h = mae_1d(dim // 2, grid[0])  # MAE calls it emb_h, but grid[0] is the w coordinate
    emb_w = mae_1d(dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


@pytest.mark.parametrize(("grid", "dim"), [((4, 4), 64), ((16, 16), 384), ((3, 5), 32)])
def test_sincos_table_matches_mae(grid, dim):
    table = SinCosTable(grid, dim)
    expected = torch.from_numpy(mae_2d(dim, grid)).float()
    assert table.table.shape == (grid[0], grid[1], dim)
    assert_close(table.table.reshape(-1, dim), expected, atol=1e-6, rtol=0)
    # Lookup by (h, w) coordinates, tokens listed in row-major order as a patchify produces them.
    h, w = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    pos = torch.stack([h.flatten(), w.flatten()], dim=-1).float()[None].expand(2, -1, -1)
    looked_up = table(pos)
    assert looked_up.shape == (2, grid[0] * grid[1], dim)
    assert_close(looked_up[1], expected, atol=1e-6, rtol=0)


def test_sincos_table_is_frozen_and_counted():
    table = SinCosTable((4, 4), 32)
    params = list(table.parameters())
    assert len(params) == 1 and params[0] is table.table
    assert table.table.requires_grad is False
    assert "table" in table.state_dict()
    out = table(torch.zeros(1, 3, 2))
    assert not out.requires_grad


@pytest.mark.parametrize("bad", [(4, 0), (0, 5), (-1, 0), (0, -1), (10, 10)])
def test_sincos_table_rejects_out_of_range(bad):
    table = SinCosTable((4, 5), 32)
    pos = torch.tensor([[[0.0, 0.0], [float(bad[0]), float(bad[1])]]])
    with pytest.raises(ValueError):
        table(pos)


def test_sincos_table_needs_width_divisible_by_4():
    with pytest.raises(ValueError):
        SinCosTable((4, 4), 30)


def test_rope_angles_layout():
    """Axis by axis: axis i owns the next axes_dim[i] / 2 channel pairs, frequencies theta^(-2j / dim)."""
    axes_dim = [8, 4, 4]
    pos = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 7.0]]])
    angles = rope_angles(pos, axes_dim, theta=100.0)
    assert angles.shape == (1, 3, 8)
    assert_close(angles[0, 0], torch.cat([3.0 * 100.0 ** (-torch.arange(0, 8, 2) / 8), torch.zeros(4)]))
    assert_close(
        angles[0, 1], torch.cat([torch.zeros(4), 5.0 * 100.0 ** (-torch.arange(0, 4, 2) / 4), torch.zeros(2)])
    )
    assert_close(angles[0, 2], torch.cat([torch.zeros(6), 7.0 * 100.0 ** (-torch.arange(0, 4, 2) / 4)]))
