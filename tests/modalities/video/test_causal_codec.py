"""The `causal-video` codec kind: causal in time (exactly: a latent frame never sees a later clip frame),
the first frame encoded alone (T = 1 + 4k -> 1 + k latent frames), errors naming bad clip shapes, and an
export that loads back to the same model through the kind registry; the codec stage pads clips in time."""

from __future__ import annotations

import pytest
import torch

from mmdit.codecs import codec_kind, load_codec, save_codec, time_folding
from mmdit.recipe import load_recipe
from mmdit.training.codec_module import CodecModule, codec_config
from modalities import build_adapter
from modalities.video.causal_codec import CausalVideoCodec, CausalVideoConfig

SMALL = CausalVideoConfig(channels=1, latent_channels=3, widths=(4, 6, 8), temporal_downsampling=4)


def _model(config: CausalVideoConfig = SMALL) -> CausalVideoCodec:
    torch.manual_seed(0)
    return CausalVideoCodec(config).double().eval()


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (5, 2), (9, 3)])
def test_clips_of_1_plus_4k_frames_give_1_plus_k_latent_frames_and_decode_to_their_shape(
    frames, latent_frames
):
    model = _model()
    x = torch.rand(2, 1, frames, 16, 12, dtype=torch.float64)
    z = model.encode(x).mean
    assert z.shape == (2, 3, latent_frames, 4, 3)
    assert model.decode(z).shape == x.shape
    assert time_folding(SMALL).latent_frames(frames) == latent_frames


def test_eight_frames_are_refused_with_the_shape_and_pad_to_nine():
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 16, 16\).*1 \+ k·4"):
        _model().encode(torch.zeros(1, 1, 8, 16, 16, dtype=torch.float64))
    assert time_folding(SMALL).padded_frames(8) == 9


def test_a_latent_frame_never_depends_on_a_later_clip_frame():
    model = _model()
    torch.manual_seed(1)
    x = torch.rand(1, 1, 9, 8, 8, dtype=torch.float64)
    z = model.encode(x).mean
    for k in range(9):
        changed = x.clone()
        changed[:, :, k] += 0.5
        z_changed = model.encode(changed).mean
        for j in range(3):
            # Latent frame j ends at clip frame 4j (the first alone); later frames must not reach it.
            if 4 * j < k:
                assert torch.equal(z_changed[:, :, j], z[:, :, j]), (k, j)
            if 4 * j >= k and j * 4 - 3 <= k:
                assert not torch.allclose(z_changed[:, :, j], z[:, :, j]), (k, j)


def test_the_first_frame_is_encoded_alone_as_an_image():
    model = _model()
    x = torch.rand(1, 1, 9, 8, 8, dtype=torch.float64)
    # Equal up to float64 rounding: convolutions over 9 and over 1 frame may sum in another order.
    torch.testing.assert_close(
        model.encode(x).mean[:, :, :1], model.encode(x[:, :, :1]).mean, rtol=0, atol=1e-12
    )


def test_the_kind_exports_and_loads_to_the_same_codec(tmp_path):
    model = _model().float()
    path = save_codec(tmp_path / "codec.safetensors", model, scale=[0.5, 2.0, 1.0], shift=0.25)
    loaded = load_codec(path)
    assert loaded.config == SMALL and (loaded.scale, loaded.shift) == ([0.5, 2.0, 1.0], 0.25)
    assert codec_kind("causal-video").config is CausalVideoConfig
    time = time_folding(loaded.config)
    assert (time.factor, time.causal, loaded.config.downsampling) == (4, True, 4)
    x = torch.rand(2, 1, 5, 8, 8)
    assert torch.equal(loaded.model.encode(x).mean, model.encode(x).mean)
    z = torch.randn(2, 3, 2, 2, 2)
    assert torch.equal(loaded.model.decode(z), model.decode(z))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"temporal_downsampling": 3}, "power of two"),
        ({"temporal_downsampling": 8}, "up to the spatial downsampling 4"),
        ({"widths": (4,)}, "two or more"),
        ({"causal": False}, "causal True"),
    ],
)
def test_bad_configs_are_errors_naming_the_key(changes, message):
    with pytest.raises(ValueError, match=message):
        CausalVideoConfig(**{**SMALL.to_dict(), **changes})


def test_the_codec_stage_pads_clips_to_nine_frames_with_the_last_and_crops_back():
    recipe = load_recipe(
        "video-moving-digits-codec",
        [
            "autoencoder.options.causal-video.widths=[4,4,4]",
            "autoencoder.options.causal-video.latent_channels=2",
        ],
    )
    adapter = build_adapter("video", **recipe.streams.video.options)
    config = codec_config(recipe, (1, 8, 32, 32), adapter)
    assert config == CausalVideoConfig(
        channels=1, latent_channels=2, widths=(4, 4, 4), temporal_downsampling=4
    )
    module = CodecModule(recipe, {}, adapter, config)
    clips = torch.rand(2, 1, 8, 32, 32)
    padded, extent = module._padded(clips)
    assert extent == (8, 32, 32) and padded.shape == (2, 1, 9, 32, 32)
    assert torch.equal(padded[:, :, :8], clips * 2 - 1)  # the codec sees [-1, 1], as the tokenizer feeds it
    assert torch.equal(padded[:, :, 8], padded[:, :, 7])
    x_hat, posterior = module.reconstruct(clips)
    assert x_hat.shape == clips.shape and posterior.mean.shape == (2, 2, 3, 8, 8)
