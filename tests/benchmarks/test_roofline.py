"""benchmarks/roofline.py's parts: the matrix products it records from a training step add up to the FLOPs
`mmdit.model.flops` counts, timing them gives a positive roofline, and the profile's families cover a step."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.flops import training_flops
from mmdit.model.tokens import Tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gemm_limit import Gemm, gemm_limit, recorded_gemms  # noqa: E402
from step_profile import FAMILIES, family, step_breakdown  # noqa: E402

BATCH = 2


def tiny_step(joint: bool, batch: int = BATCH):
    """A training step of a two-stream MMDiT (joint blocks) or a one-stream DiT (single blocks), with its
    model and token counts."""
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    streams = {"image": (StreamSpec("image", 12, 24, "sincos", 2, (4, 4)), grid.reshape(1, 16, 2))}
    if joint:
        streams["text"] = (StreamSpec("text", 8, axes=1), torch.arange(5.0).reshape(1, 5, 1))
    depth = {"joint_depth": 2} if joint else {"single_depth": 2}
    model = MMDiT([spec for spec, _ in streams.values()], width=32, heads=4, labels={"class": 10}, **depth)
    lengths = {name: pos.shape[1] for name, (_, pos) in streams.items()}
    tokens = {
        name: Tokens(
            torch.randn(batch, n, spec.features), pos.expand(batch, -1, -1), torch.ones(batch, n, dtype=bool)
        )
        for (name, (spec, pos)), n in zip(streams.items(), lengths.values(), strict=True)
    }
    optimizer = torch.optim.AdamW(model.parameters())

    def step() -> None:
        out = model(tokens, torch.rand(batch), {"class": torch.randint(0, 10, (batch,))})
        sum(o.square().mean() for o in out.values()).backward()
        optimizer.step()
        optimizer.zero_grad()

    return model, lengths, step


@pytest.mark.parametrize("joint", [False, True])
def test_recorded_products_are_the_flops_the_model_counts(joint):
    model, lengths, step = tiny_step(joint)
    gemms = recorded_gemms(step)
    assert sum(count * g.flops for g, count in gemms.items()) == BATCH * training_flops(model, lengths)


def test_attention_through_sdpa_and_matmul_is_recorded_as_the_same_products():
    q, k, v = (torch.randn(2, 3, 7, 4, requires_grad=True) for _ in range(3))
    fused = recorded_gemms(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    by_hand = recorded_gemms(lambda: ((q @ k.transpose(-1, -2)).softmax(-1) @ v).sum().backward())
    assert fused == by_hand
    assert Gemm(6, 7, 4, 7) in fused and Gemm(6, 7, 7, 4) in fused


def test_gradients_of_a_product_have_the_transposed_shapes():
    forward = Gemm(2, 5, 3, 4)
    assert forward.with_gradients() == (forward, Gemm(2, 5, 4, 3), Gemm(2, 3, 5, 4))
    assert {g.flops for g in forward.with_gradients()} == {2 * 2 * 5 * 3 * 4}


def test_the_limit_is_no_slower_than_its_slowest_and_no_faster_than_its_fastest_shape():
    gemms = recorded_gemms(tiny_step(joint=False)[2])
    limit = gemm_limit(gemms, torch.float32, torch.device("cpu"))
    assert limit.flops == sum(count * g.flops for g, count in gemms.items())
    assert 0 < limit.mix_flops_per_s <= limit.best_flops_per_s


def test_operators_fall_into_their_families():
    names = {
        "aten::addmm": "matmul", "aten::bmm": "matmul", "aten::_softmax": "attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::_fused_adamw_": "optimizer",
        "aten::_to_copy": "casts", "aten::copy_": "casts",
        "aten::native_layer_norm_backward": "normalisation",
        "aten::gelu": "elementwise", "aten::addcmul": "elementwise", "aten::tomato": "elementwise",
    }  # fmt: skip
    assert {name: family(name) for name in names} == names


def test_a_profiled_step_is_split_over_every_family():
    seconds = step_breakdown(tiny_step(joint=True)[2], steps=1)
    assert list(seconds) == list(FAMILIES)
    assert seconds["matmul"] > 0 and seconds["optimizer"] > 0 and sum(seconds.values()) > 0
