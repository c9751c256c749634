"""Conditioning embeddings: DiT's timestep features on t * 1000, labels with a null class, pooled vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from mmdit.model.embeddings import LabelEmbedder, PooledEmbedder, TimestepEmbedder, timestep_features


def dit_features(t_int: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's TimestepEmbedder.timestep_embedding, written out: integer steps, cos first then sin."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t_int[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def test_features_are_cos_first_then_sin():
    feats = timestep_features(torch.zeros(3), 64)
    assert feats.shape == (3, 64)
    assert torch.equal(feats[:, :32], torch.ones(3, 32))
    assert torch.equal(feats[:, 32:], torch.zeros(3, 32))
    # The first pair has frequency 1 on t * 1000.
    feats = timestep_features(torch.tensor([0.001]), 64)
    assert_close(feats[0, 0], torch.tensor(math.cos(1.0)))
    assert_close(feats[0, 32], torch.tensor(math.sin(1.0)))


def test_features_match_dit_exactly_on_dyadic_times():
    steps = torch.tensor([0, 125, 250, 500, 750, 875, 1000])
    assert torch.equal(timestep_features(steps / 1000.0), dit_features(steps))


def test_features_match_dit_on_every_integer_step():
    steps = torch.arange(1000)
    # float64 reference of the same formula, so the comparison does not share float32 rounding with either.
    half = 128
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = steps.numpy()[:, None].astype(np.float64) * freqs[None]
    reference = torch.from_numpy(np.concatenate([np.cos(args), np.sin(args)], axis=1)).float()
    ours = timestep_features(steps.float() / 1000.0)
    assert_close(ours, reference, atol=5e-4, rtol=0)
    assert_close(ours, dit_features(steps), atol=5e-4, rtol=0)


def test_rectified_flow_time_and_dit_step_give_the_same_embedding():
    torch.manual_seed(0)
    embedder = TimestepEmbedder(width=32)
    for p in embedder.parameters():
        torch.nn.init.normal_(p, std=0.1)
    ours = embedder(torch.tensor([0.25, 0.25]))
    dit = embedder.mlp(dit_features(torch.tensor([250, 250])))
    assert ours.shape == (2, 32)
    assert torch.equal(ours, dit)
    assert not torch.allclose(embedder(torch.tensor([0.5])), ours[:1])


def test_label_embedder_has_a_null_row():
    embedder = LabelEmbedder(num_classes=10, width=16)
    assert embedder.null_index == 10
    assert embedder.embedding.num_embeddings == 11
    out = embedder(torch.tensor([0, 9, embedder.null_index]))
    assert out.shape == (3, 16)
    assert torch.equal(out[2], embedder.embedding.weight[10])
    with pytest.raises(IndexError):
        embedder(torch.tensor([11]))


def test_pooled_embedder_shapes():
    embedder = PooledEmbedder(dim=12, width=16)
    assert embedder(torch.zeros(5, 12)).shape == (5, 16)
