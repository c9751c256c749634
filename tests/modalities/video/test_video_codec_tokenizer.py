"""The video adapter's `codec` option: clips -> a frozen causal video codec's normalised latents -> tokens of
latent cells with (t, h, w) positions and back to clips of the adapter's frames; frame masks carried through
the latent frames; the codec's digest as the token-cache identity; shapes the codec cannot take refused."""

from __future__ import annotations

import pytest
import torch

from mmdit.codecs import FrozenCodec, codec_digest, save_codec
from modalities.video import VideoAdapter
from modalities.video.causal_codec import CausalVideoCodec, CausalVideoConfig


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    torch.manual_seed(0)
    model = CausalVideoCodec(CausalVideoConfig(channels=1, latent_channels=2, widths=(4, 4, 4))).eval()
    path = tmp_path_factory.mktemp("video-codec") / "codec.safetensors"
    return save_codec(path, model, scale=[2.0, 0.5], shift=0.1)


def _adapter(codec, **options) -> VideoAdapter:
    settings = {"channels": 1, "tubelet": [1, 2, 2], "size": [32, 32], "frames": 8, "codec": str(codec)}
    return VideoAdapter(**{**settings, **options})


def test_clips_become_tokens_of_latent_cells_and_decode_to_the_adapters_frames(codec):
    adapter = _adapter(codec)
    clips = torch.rand(3, 1, 8, 32, 32)
    tokens = adapter.encode(clips)
    assert adapter.grid == (3, 4, 4) and adapter.features == 8
    assert tokens.x.shape == (3, 48, 8) and tokens.pos.shape == (3, 48, 3) and bool(tokens.mask.all())
    assert adapter.stream("video").features == 8
    assert {tuple(p) for p in tokens.pos[0].long().tolist()} == {
        (t, h, w) for t in range(3) for h in range(4) for w in range(4)
    }
    # The tokens are the codec's normalised latents of the clip padded to 9 frames with its last, in [-1, 1].
    frozen = FrozenCodec(codec, 3, 1, "clips", "")
    padded = torch.cat([clips, clips[:, :, -1:]], dim=2) * 2 - 1
    latents = frozen.encode(padded)  # [3, 2, 3, 8, 8]
    assert torch.equal(tokens.x[:, 0, :2], latents[:, :, 0, 0, 0])
    assert torch.equal(
        tokens.x[:, 0, 2:4], latents[:, :, 0, 0, 1]
    )  # cells (h, w) row-major, channels fastest
    decoded = adapter.decode(tokens)
    assert decoded.shape == clips.shape
    expected = ((frozen.decode(latents)[:, :, :8] + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-6)


def test_frame_masks_follow_the_first_frame_of_each_latent_frame(codec):
    adapter = _adapter(codec)
    frames = torch.tensor([8.0, 1.0, 5.0, 2.0, 6.0])
    # Latent frames 0, 1, 2 start at clip frames 0, 1, 5 (the first alone, then 4 a latent frame).
    real_latent_frames = torch.tensor([3, 1, 2, 2, 3])
    for tokens in (
        adapter.encode(torch.rand(5, 1, 8, 32, 32), {"frames": frames}),
        adapter.layout(5, {"frames": frames}),
    ):
        assert tokens.mask.shape == (5, 48)
        assert torch.equal(tokens.mask.sum(1), real_latent_frames * 16)
        assert torch.equal(tokens.mask, tokens.pos[..., 0] < real_latent_frames[:, None])
    with pytest.raises(ValueError, match="numbers\\['frames'\\]"):
        adapter.layout(2, {"frames": torch.tensor([0.0, 3.0])})


def test_a_one_frame_clip_is_one_latent_frame(codec):
    adapter = _adapter(codec, frames=1, tubelet=[1, 1, 1])
    tokens = adapter.encode(torch.rand(2, 1, 1, 32, 32))
    assert adapter.grid == (1, 8, 8) and tokens.x.shape == (2, 64, 2)
    assert adapter.decode(tokens).shape == (2, 1, 1, 32, 32)


def test_the_cache_identity_is_the_codec_digest_and_the_codec_stage_sees_minus_one_to_one(codec):
    adapter = _adapter(codec)
    assert adapter.encoding_identity() == {"codec": codec_digest(codec)}
    assert VideoAdapter(channels=1, tubelet=[1, 8, 8]).encoding_identity() == {}
    clips = torch.rand(2, 1, 8, 32, 32)
    assert torch.equal(adapter.codec_values(clips), clips * 2 - 1)
    torch.testing.assert_close(adapter.codec_media(adapter.codec_values(clips)), clips, rtol=0, atol=1e-7)


def test_shapes_the_codec_cannot_take_are_refused_naming_the_codec(codec):
    with pytest.raises(ValueError, match=r"latent extent \[3, 8, 8\].*tubelet \[2, 2, 2\]"):
        _adapter(codec, tubelet=[2, 2, 2])
    with pytest.raises(ValueError, match="downsampling 4"):
        _adapter(codec, size=[30, 32])
    with pytest.raises(ValueError, match="2-D codec|3-D codec"):
        VideoAdapter(channels=3, tubelet=[1, 2, 2], codec=str(codec))


def test_a_diffusers_wan_folder_is_a_video_codec_too(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    wan = diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        attn_scales=[],
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[2.0, 0.5, 1.0, 4.0],
    )
    wan.save_pretrained(tmp_path / "wan")
    adapter = VideoAdapter(
        channels=3, tubelet=[1, 2, 2], size=[16, 16], frames=8, codec=str(tmp_path / "wan")
    )
    clips = torch.rand(2, 3, 8, 16, 16)
    tokens = adapter.encode(clips, {"frames": torch.tensor([8, 3])})
    # 8 frames padded to 9 -> 3 latent frames of 4 x 4 cells -> 3 x 2 x 2 tokens of 2 * 2 * 4 values.
    assert adapter.grid == (3, 2, 2) and tokens.x.shape == (2, 12, 16)
    assert tokens.mask.sum(1).tolist() == [12, 8]  # 3 frames reach the second latent frame, not the third
    padded = torch.cat([clips, clips[:, :, -1:]], dim=2) * 2 - 1
    with torch.no_grad():
        mean = wan.encode(padded).latent_dist.mean
    std = torch.tensor([2.0, 0.5, 1.0, 4.0]).view(1, 4, 1, 1, 1)
    shift = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1, 1)
    expected = (mean - shift) / std
    torch.testing.assert_close(tokens.x[:, 0, :4], expected[:, :, 0, 0, 0])
    assert adapter.decode(tokens).shape == clips.shape
