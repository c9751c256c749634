"""The MAC count reproduces DiT's reported "Gflops" (multiply-accumulates per 256 px image)."""

import pytest
import torch

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.flops import forward_macs, training_flops
from mmdit.model.presets import preset


@pytest.mark.parametrize(
    "name, paper", [("DiT-S/2", 6.06), ("DiT-B/2", 23.01), ("DiT-L/2", 80.70), ("DiT-XL/2", 118.6)]
)
def test_dit_macs_match_the_paper(name, paper):
    sizes = preset(name)
    patch = sizes.pop("patch_size")
    grid = 32 // patch
    spec = StreamSpec("image", 4 * patch**2, 8 * patch**2, "sincos", 2, (grid, grid))
    with torch.device("meta"):
        model = MMDiT([spec], qk_norm=False, labels={"class": 1000}, **sizes)
    macs = forward_macs(model, {"image": grid * grid})
    decimals = len(str(paper).split(".")[1])
    assert round(macs / 1e9, decimals) == paper
    assert training_flops(model, {"image": grid * grid}) == 6 * macs


def test_joint_streams_count_their_own_weights_and_the_shared_attention():
    streams = [StreamSpec("a", 4, positions="none"), StreamSpec("b", 8, positions="none")]
    model = MMDiT(streams, width=32, heads=2, joint_depth=1)
    both = forward_macs(model, {"a": 10, "b": 6})
    # Attention over 16 tokens costs more than over 10 and 6 apart: 2 * 16^2 * 32 vs 2 * (10^2 + 6^2) * 32.
    alone = forward_macs(model, {"a": 10}) + forward_macs(model, {"b": 6})
    assert both - alone == 2 * (16**2 - 10**2 - 6**2) * 32
