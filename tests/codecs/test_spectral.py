"""The STFT front end of waveform codecs: frames in and out are an exact inverse pair away from the last
frame, a full-scale sine's bin is about 1, and a codec over frames keeps waveform shapes and exports."""

from __future__ import annotations

import math

import pytest
import torch

from mmdit.codecs import AutoencoderConfig, ConvAutoencoder, load_codec, save_codec
from mmdit.codecs.spectral import STFTFrames


def test_frames_invert_exactly_except_the_last_frame_s_half_window():
    frames = STFTFrames(64, 16)
    x = torch.randn(2, 3, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    features = frames.analyse(x)
    assert features.shape == (2, frames.features(3), 256 // 16) == (2, 2 * 3 * 33, 16)
    back = frames.synthesise(features)
    assert back.shape == x.shape
    # The dropped last frame (centred on sample 256) is restored as a copy of the one before: only the
    # samples it overlaps, the last n_fft / 2, are approximate.
    torch.testing.assert_close(back[..., :-32], x[..., :-32], rtol=0, atol=1e-12)
    assert (back[..., -32:] - x[..., -32:]).abs().max() > 1e-3


def test_a_full_scale_sine_at_a_bin_centre_has_magnitude_one():
    frames = STFTFrames(256, 64)
    t = torch.arange(4096, dtype=torch.float64)
    sine = torch.sin(2 * math.pi * 16 * t / 256)[None, None]  # exactly bin 16
    parts = frames.analyse(sine)[0, :, 4:-4]  # frames away from the reflect-padded ends
    magnitude = parts[:129].hypot(parts[129:])
    torch.testing.assert_close(magnitude[16], torch.ones_like(magnitude[16]), rtol=0, atol=1e-9)


def test_an_stft_codec_maps_waveforms_to_frames_of_latents_and_back(tmp_path):
    config = AutoencoderConfig(
        dims=1, channels=2, latent_channels=4, widths=(16, 16), strides=(2,), stft=(64, 16)
    )
    assert config.downsampling == 32
    torch.manual_seed(0)
    model = ConvAutoencoder(config)
    x = torch.randn(3, 2, 320)
    posterior = model.encode(x)
    assert posterior.mean.shape == (3, 4, 10)
    assert model.decode(posterior.mode()).shape == x.shape
    loaded = load_codec(save_codec(tmp_path / "codec.safetensors", model, scale=1.0, shift=0.0))
    assert loaded.config == config and loaded.config.stft == (64, 16)
    torch.testing.assert_close(loaded.model.decode(posterior.mode()), model.decode(posterior.mode()))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stft": (63, 16)}, "n_fft must be even"),
        ({"stft": (64, 40)}, "at least 2 \\* hop"),
        ({"stft": (64,)}, "two positive ints"),
        ({"dims": 2}, "dims 1 and patch 1"),
        ({"patch": 4}, "dims 1 and patch 1"),
    ],
)
def test_a_bad_stft_setting_is_refused_naming_it(change, message):
    fields = dict(dims=1, channels=1, latent_channels=4, widths=(8,), strides=(), stft=(64, 16))
    with pytest.raises(ValueError, match=message):
        AutoencoderConfig(**{**fields, **change})
