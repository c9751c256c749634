"""Classifier-free guidance limited to an interval of time, its scale schedule, and the NFE it counts."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.tokens import Tokens
from mmdit.objectives.flow import RectifiedFlow
from mmdit.objectives.guidance import EvaluationCount, GuidanceSchedule, guided_prediction

B, N, F = 3, 6, 4


@pytest.fixture(scope="module")
def model() -> MMDiT:
    torch.manual_seed(0)
    net = MMDiT([StreamSpec("s", F, axes=1)], width=32, heads=2, single_depth=1, labels={"digit": 10})
    for p in net.parameters():  # adaLN-Zero starts at a zero output: give the branches something to differ
        torch.nn.init.normal_(p, std=0.05)
    return net.eval()


def inputs():
    layout = {
        "s": Tokens(
            torch.zeros(B, N, F),
            torch.arange(N).float()[None, :, None].expand(B, N, 1),
            torch.ones(B, N, dtype=torch.bool),
        )
    }
    x = {"s": torch.randn(B, N, F, generator=torch.Generator().manual_seed(1))}
    return layout, {"digit": torch.tensor([1, 2, 3])}, x


@torch.no_grad()
def test_guidance_applies_inside_the_interval_only(model):
    layout, labels, x = inputs()
    conditional = guided_prediction(model, layout, labels, scale=1.0)
    always = guided_prediction(model, layout, labels, scale=2.5)
    limited = guided_prediction(model, layout, labels, scale=2.5, interval=(0.3, 0.7))
    for time in (0.0, 0.2, 0.29, 0.71, 1.0):
        t = torch.full((B,), time)
        assert torch.equal(limited(x, t)["s"], conditional(x, t)["s"]), time  # bitwise: one conditional call
    for time in (0.3, 0.5, 0.7):
        t = torch.full((B,), time)
        assert torch.equal(limited(x, t)["s"], always(x, t)["s"]), time
        assert (limited(x, t)["s"] - conditional(x, t)["s"]).abs().max() > 1e-3


@torch.no_grad()
def test_a_batch_straddling_the_interval_is_guided_item_by_item(model):
    layout, labels, x = inputs()
    t = torch.tensor([0.1, 0.5, 0.9])
    limited = guided_prediction(model, layout, labels, scale=2.5, interval=(0.3, 0.7))(x, t)["s"]
    conditional = guided_prediction(model, layout, labels, scale=1.0)(x, t)["s"]
    always = guided_prediction(model, layout, labels, scale=2.5)(x, t)["s"]
    assert_close(limited[[0, 2]], conditional[[0, 2]])
    assert_close(limited[1], always[1])


def test_scale_schedules():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.equal(GuidanceSchedule(3.0).scale_at(t), torch.full((4,), 3.0))
    # linear: strength (scale - 1) = 2 rises from 0 at t = 1 to 4 at t = 0, mean 2 over t.
    assert_close(GuidanceSchedule(3.0, shape="linear").scale_at(t), torch.tensor([5.0, 4.0, 3.0, 1.0]))
    limited = GuidanceSchedule(3.0, (0.2, 0.6), "linear").scale_at(t)
    assert_close(limited, torch.tensor([1.0, 4.0, 3.0, 1.0]))
    with pytest.raises(
        ValueError, match=r"guidance_interval must satisfy 0 <= lo <= hi <= 1, got \[0.8, 0.2\]"
    ):
        GuidanceSchedule(2.0, (0.8, 0.2))
    with pytest.raises(ValueError, match="guidance_interval must be \\[lo, hi\\]"):
        GuidanceSchedule(2.0, (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="cfg_schedule must be one of"):
        GuidanceSchedule(2.0, shape="cosine")


def fake_model_calls(model, monkeypatch) -> list[int]:
    """Records the batch size of every forward of `model`."""
    sizes, forward = [], model.forward

    def counted(streams, *args, **kwargs):
        sizes.append(next(iter(streams.values())).x.shape[0])
        return forward(streams, *args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    return sizes


# (sampler, steps, interval) -> NFE per sample with guidance at scale 2: uniform times 1, 0.75, 0.5, 0.25, 0.
# Euler / DPM-Solver++(2M) call at 1, .75, .5, .25; Heun also at its corrector times .75, .5, .25.
CASES = [
    ("euler", 4, (0.0, 1.0), 8),
    ("euler", 4, (0.3, 0.8), 2 + 2 + 1 + 1),  # guided at .75, .5
    ("dpmpp_2m", 4, (0.0, 1.0), 8),
    ("dpmpp_2m", 4, (0.3, 0.8), 6),
    ("heun", 4, (0.0, 1.0), 14),  # 7 calls
    ("heun", 4, (0.3, 0.8), 1 + 2 * 2 + 2 * 2 + 1 + 1),  # guided at .75, .75, .5, .5
]


@pytest.mark.parametrize(("sampler", "steps", "interval", "nfe"), CASES)
@torch.no_grad()
def test_nfe_is_counted_exactly(model, monkeypatch, sampler, steps, interval, nfe):
    layout, labels, x = inputs()
    sizes = fake_model_calls(model, monkeypatch)
    count = EvaluationCount()
    predict = guided_prediction(model, layout, labels, scale=2.0, interval=interval, count=count)
    RectifiedFlow().sample(predict, x, steps, sampler)
    assert count.nfe == nfe
    assert sum(sizes) == nfe * B  # each guided call is one forward of 2B, each unguided one of B


@torch.no_grad()
def test_without_guidance_every_call_is_one_evaluation(model, monkeypatch):
    layout, labels, x = inputs()
    count = EvaluationCount()
    RectifiedFlow().sample(guided_prediction(model, layout, labels, scale=1.0, count=count), x, 5, "heun")
    assert count.nfe == 9
    linear = EvaluationCount()  # the linear schedule's scale is 1 at t = 1: that call is unguided
    predict = guided_prediction(model, layout, labels, scale=2.0, scale_schedule="linear", count=linear)
    RectifiedFlow().sample(predict, x, 4, "euler")
    assert linear.nfe == 1 + 2 * 3
