"""Attention layouts for video: full joint attention and Latte's factorised spatial / temporal blocks, both
respecting the masks of padding frames; streams without (t, h, w) positions see everything."""

import pytest
import torch

from mmdit.contract import StreamSpec
from mmdit.model.attention_layouts import block_masks
from mmdit.model.backbone import MMDiT
from mmdit.model.tokens import Tokens
from modalities.video.adapter import VideoAdapter

ADAPTER = VideoAdapter(channels=1, tubelet=(1, 4, 4), size=(8, 8), frames=4)  # 4 × 2 × 2 = 16 tokens


def video_tokens(frames: list[float], seed: int = 0) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    clips = torch.rand(len(frames), 1, 4, 8, 8, generator=g)
    return ADAPTER.encode(clips, {"frames": torch.tensor(frames)})


def model(attention: str, depth: int, caption: bool = False) -> MMDiT:
    torch.manual_seed(0)
    streams = [ADAPTER.stream("video")]
    if caption:
        streams.append(StreamSpec("caption", features=8, positions="none"))
    net = MMDiT(streams, width=32, heads=2, single_depth=depth, attention=attention)
    # adaLN-Zero starts every block as the identity; random modulations make attention matter.
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net.eval()


def test_factorised_masks_group_by_time_then_by_place():
    tokens = video_tokens([4.0, 2.0])
    spatial, temporal = (m[:, 0] for m in block_masks("factorised", [tokens]))
    t, hw = tokens.pos[0, :, 0], tokens.pos[0, :, 1:]
    same_t = t[:, None] == t[None, :]
    same_place = (hw[:, None] == hw[None, :]).all(-1)
    assert torch.equal(spatial[0], same_t) and torch.equal(temporal[0], same_place)
    # Clip 1 has 2 real frames: no token sees its padding; a padding token sees itself, and real tokens of
    # its group (a spatial group of padding is all padding: without itself the row would be empty).
    real, itself = tokens.mask[1], torch.eye(16, dtype=torch.bool)
    assert torch.equal(spatial[1], (same_t & real[None, :]) | itself)
    assert torch.equal(spatial[1][~real], itself[~real])
    assert torch.equal(temporal[1], (same_place & real[None, :]) | itself)
    full = block_masks("full", [tokens])
    assert len(full) == 1 and torch.equal(full[0][:, 0, 0], tokens.mask)
    with pytest.raises(ValueError, match="factorized"):
        block_masks("factorized", [tokens])


def test_tokens_without_three_axes_attend_fully():
    video = video_tokens([4.0])
    caption = Tokens(torch.zeros(1, 3, 8), torch.zeros(1, 3, 0), torch.tensor([[True, True, False]]))
    for mask in block_masks("factorised", [video, caption]):
        mask = mask[0, 0]
        assert mask[16:18].sum(-1).tolist() == [16 + 2, 16 + 2]  # captions see all real tokens
        assert mask[:16, 16:18].all() and not mask[:16, 18].any()  # video sees real captions only


@pytest.mark.parametrize("attention", ["full", "factorised"])
def test_padding_frames_do_not_reach_real_tokens(attention):
    net = model(attention, depth=2)
    tokens = video_tokens([4.0, 2.0, 1.0])
    t = torch.full((3,), 0.5)
    out = net({"video": tokens}, t)["video"]
    assert torch.isfinite(out).all()
    changed = tokens.x.clone()
    changed[~tokens.mask] = torch.randn(int((~tokens.mask).sum()), tokens.features)
    again = net({"video": tokens.with_x(changed)}, t)["video"]
    assert torch.allclose(out[tokens.mask], again[tokens.mask], atol=1e-5)
    # Without the mask, the same change would be seen: the test can fail.
    unmasked = Tokens(tokens.x, tokens.pos, torch.ones_like(tokens.mask))
    base = net({"video": unmasked}, t)["video"]
    moved = net({"video": unmasked.with_x(changed)}, t)["video"]
    assert not torch.allclose(base[tokens.mask], moved[tokens.mask], atol=1e-3)


def test_a_spatial_block_keeps_frames_apart_and_a_temporal_one_joins_them():
    tokens = video_tokens([4.0])
    t = torch.full((1,), 0.5)
    frame1 = tokens.pos[0, :, 0] == 1
    changed = tokens.x.clone()
    changed[0, frame1] += 1.0
    for attention, depth, frame0_moves in [
        ("factorised", 1, False),
        ("factorised", 2, True),
        ("full", 1, True),
    ]:
        net = model(attention, depth)
        out = net({"video": tokens}, t)["video"]
        again = net({"video": tokens.with_x(changed)}, t)["video"]
        frame0 = tokens.pos[0, :, 0] == 0
        assert torch.allclose(out[0, frame0], again[0, frame0], atol=1e-5) != frame0_moves, attention


def test_unknown_layout_is_refused_at_construction():
    with pytest.raises(ValueError, match="attention"):
        MMDiT([ADAPTER.stream("video")], width=32, heads=2, single_depth=1, attention="axial")
