"""The harmonic codec: its measured pitch and loudness channels on synthetic tones, the latent's shape and
deterministic measured part, the export round trip, the codec-kind registry's errors, and a tiny codec stage
on a folder of 44.1 kHz stereo files of several lengths."""

from __future__ import annotations

import json
import math
import re

import pytest
import soundfile
import torch
from safetensors.torch import load_file, save_file

from mmdit.cli import main
from mmdit.codecs import load_codec, save_codec
from mmdit.codecs.kinds import codec_kind
from mmdit.recipe import load_recipe
from mmdit.training.build import build
from modalities.audio.harmonic_codec import (
    PITCH_CENTRE,
    PITCH_HALF_RANGE,
    HarmonicCodec,
    HarmonicCodecConfig,
    MeasuredPosterior,
    harmonic_statistics,
)

SMALL = {"timbre_channels": 2, "harmonics": 8, "noise_bands": 4, "width": 8, "blocks": 1, "n_fft": 512}


def _tone(hz: float, rate: int, samples: int, level: float = 0.3) -> torch.Tensor:
    """Three harmonics (1, 1/2, 1/3) of hz: [samples] float64."""
    t = torch.arange(samples, dtype=torch.float64) / rate
    return level * sum(torch.sin(2 * math.pi * k * hz * t) / k for k in (1, 2, 3))


def _hz(pitch: torch.Tensor) -> torch.Tensor:
    return 2.0 ** (pitch.double() * PITCH_HALF_RANGE + PITCH_CENTRE)


@pytest.mark.parametrize(("rate", "hz"), [(16000, 110.0), (16000, 233.08), (16000, 880.0), (44100, 329.63)])
def test_the_pitch_channel_recovers_a_tone_within_five_cents(rate, hz):
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=rate, **SMALL))
    samples = 64 * 256
    measured = model.measure(_tone(hz, rate, samples)[None, None])
    cents = 1200 * torch.log2(_hz(measured[0, 0]) / hz)
    assert measured.shape == (1, 2, 64)
    # Frames whose YIN window lies inside the clip; at 880 Hz (18-sample periods) the parabola through
    # the integer lags is 3 cents off.
    assert cents[4:-4].abs().max() < 5, cents
    # 0.3·(1, 1/2, 1/3) sines: mean power 0.045·(1 + 1/4 + 1/9), about -12.1 dB, at (dB + 40) / 20;
    # within 0.6 dB, since 2·hop samples hold no whole number of periods.
    level = 10 * math.log10(0.045 * (1 + 1 / 4 + 1 / 9))
    torch.testing.assert_close(
        measured[0, 1, 4:-4], torch.full((56,), (level + 40) / 20, dtype=torch.float64), atol=0.03, rtol=0
    )


def test_silent_frames_take_the_clips_median_pitch_and_the_loudness_floor():
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=16000, **SMALL))
    audio = _tone(440.0, 16000, 64 * 256)
    audio[32 * 256 :] = 0
    measured = model.measure(audio[None, None])[0]
    fill = measured[0, 36]
    assert (measured[0, 36:] == fill).all() and abs(1200 * math.log2(_hz(fill) / 440)) < 2
    assert (measured[1, 36:] == (-80 + 40) / 20).all()
    # A silent clip: the middle of the pitch range, at the floor.
    silent = model.measure(torch.zeros(1, 1, 4 * 256))[0]
    torch.testing.assert_close(silent[0], torch.zeros(4), atol=1e-6, rtol=0)
    assert (silent[1] == -2).all()


def test_the_export_statistics_put_a_semitone_at_one_unit_of_pitch():
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=16000, **SMALL))
    notes = torch.stack([_tone(220.0 * 2 ** (k / 12), 16000, 32 * 256, 0.1 * (k + 1)) for k in range(4)])
    z = model.measure(notes[:, None])  # [4 notes a semitone apart, 2, 32] float64
    shift, scale = harmonic_statistics(torch.cat([z, torch.randn(4, 3, 32, dtype=torch.float64)], 1))
    pitch = (z[:, 0, 4:-4].mean(1) - shift[0]) * scale[0]
    torch.testing.assert_close(pitch.diff(), torch.ones(3, dtype=torch.float64), atol=0.01, rtol=0)
    # Every other channel: zero mean and unit variance, as channel_statistics gives.
    loudness = (z[:, 1] - shift[1]) * scale[1]
    assert abs(loudness.mean().item()) < 1e-6 and abs(loudness.std().item() - 1) < 1e-6


def test_a_stereo_clip_has_one_pitch_and_a_loudness_per_channel():
    config = HarmonicCodecConfig(channels=2, sample_rate=44100, **SMALL)
    model = HarmonicCodec(config)
    left = _tone(220.0, 44100, 40 * 256)
    audio = torch.stack([left, 0.1 * left])[None].float()
    posterior = model.encode(audio)
    assert isinstance(posterior, MeasuredPosterior)
    assert config.latent_channels == 5 and posterior.mean.shape == (1, 5, 40)
    assert (1200 * torch.log2(_hz(posterior.mean[0, 0, 8:-8]) / 220)).abs().max() < 2
    difference = 20 * (posterior.mean[0, 1] - posterior.mean[0, 2])  # dB: the right channel is 20 dB down
    torch.testing.assert_close(difference[8:-8], torch.full((24,), 20.0), atol=0.05, rtol=0)
    reconstruction = model(audio, torch.Generator().manual_seed(0))
    assert reconstruction.x_hat.shape == audio.shape
    assert torch.equal(reconstruction.z[:, :3], posterior.mean[:, :3])  # measured: never sampled
    assert not torch.equal(reconstruction.z[:, 3:], posterior.mean[:, 3:])
    timbre = posterior.mean[:, 3:], posterior.logvar[:, 3:]
    expected = 0.5 * (timbre[0].square() + timbre[1].exp() - 1 - timbre[1]).flatten(1).sum(1)
    torch.testing.assert_close(posterior.kl(), expected)


def test_louder_loudness_channels_decode_to_louder_audio():
    torch.manual_seed(0)
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=16000, **SMALL)).eval()
    z = torch.zeros(1, 4, 16)
    louder = z.clone()
    louder[:, 1] += 1  # +20 dB
    with torch.no_grad():
        quiet, loud = model.decode(z), model.decode(louder)
    ratio = 20 * torch.log10(loud.square().mean().sqrt() / quiet.square().mean().sqrt())
    assert 15 < ratio < 25, ratio  # the decoder's controls also see the channel, so not exactly 20


def test_an_export_loads_to_the_same_decoder_and_per_channel_normalisation(tmp_path):
    torch.manual_seed(0)
    config = HarmonicCodecConfig(channels=2, sample_rate=22050, **SMALL)
    model = HarmonicCodec(config).eval()
    scale, shift = [3.5, 0.5, 0.25, 1.0, 2.0], [0.1, -0.2, 0.3, 0.0, 1e-3]
    path = save_codec(tmp_path / "codec.safetensors", model, scale=scale, shift=shift, extra={"a": 1})
    loaded = load_codec(path)
    assert (loaded.config, loaded.scale, loaded.shift, loaded.extra) == (config, scale, shift, {"a": 1})
    z = torch.randn(2, config.latent_channels, 12)
    audio = torch.randn(2, 2, 12 * 256) * 0.1
    with torch.no_grad():
        assert torch.equal(loaded.model.decode(z), model.decode(z))
        assert torch.equal(loaded.model.encode(audio).mean, model.encode(audio).mean)
    with pytest.raises(ValueError, match="one per latent channel"):
        save_codec(tmp_path / "bad.safetensors", model, scale=[1.0, 2.0], shift=0.0)
    with pytest.raises(ValueError, match="scale must be non-zero"):
        save_codec(tmp_path / "bad.safetensors", model, scale=[1.0, *[0.0] * (len(scale) - 1)], shift=shift)
    with pytest.raises(ValueError, match="shift must be finite"):
        save_codec(tmp_path / "bad.safetensors", model, scale=1.0, shift=float("nan"))


def test_the_config_refuses_bad_values_naming_them():
    with pytest.raises(ValueError, match="unknown harmonic codec config keys \\['bogus'\\]"):
        HarmonicCodecConfig.from_dict({"channels": 1, "sample_rate": 16000, "bogus": 1})
    with pytest.raises(ValueError, match="hop must be even"):
        HarmonicCodecConfig(channels=1, sample_rate=16000, hop=255)
    with pytest.raises(ValueError, match="timbre_channels must be a positive int"):
        HarmonicCodecConfig(channels=1, sample_rate=16000, timbre_channels=0)
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=16000, **SMALL))
    with pytest.raises(ValueError, match=re.escape("(1, 1, 1000)") + ".*divisible by the hop 256"):
        model.encode(torch.zeros(1, 1, 1000))


def test_unknown_codec_kinds_are_errors_naming_the_kind(tmp_path):
    with pytest.raises(KeyError, match="'bogus'.*registered: .*conv, harmonic"):
        codec_kind("bogus")
    recipe = load_recipe("audio-notes-codec", ["autoencoder.kind=bogus"])
    with pytest.raises(ValueError, match="autoencoder.kind: unknown codec kind 'bogus'"):
        build(recipe)
    recipe = load_recipe("audio-notes-codec", ["autoencoder.options.bogus.width=4"])
    with pytest.raises(ValueError, match="autoencoder.options.bogus: unknown codec kind 'bogus'"):
        build(recipe)
    recipe = load_recipe("audio-notes-codec", ["autoencoder.options.harmonic.bogus=4"])
    with pytest.raises(ValueError, match="unknown harmonic codec config keys \\['bogus'\\]"):
        build(recipe)
    model = HarmonicCodec(HarmonicCodecConfig(channels=1, sample_rate=16000, **SMALL))
    path = save_codec(tmp_path / "codec.safetensors", model, scale=1.0, shift=0.0)
    tensors = load_file(path)
    with open(path, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    relabelled = tmp_path / "relabelled.safetensors"
    save_file(tensors, relabelled, metadata={**header["__metadata__"], "kind": "bogus"})
    with pytest.raises(ValueError, match=re.escape(str(relabelled)) + ".*unknown codec kind 'bogus'"):
        load_codec(relabelled)


def test_a_codec_stage_trains_on_a_folder_of_stereo_44khz_files_of_several_lengths(tmp_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    for i in range(20):
        seconds = 0.2 + 0.025 * i  # 0.2 .. 0.675 s, cropped or padded to 0.5 s
        left = _tone(150.0 * (1 + i / 20), 44100, round(seconds * 44100))
        soundfile.write(folder / f"{i}.wav", torch.stack([left, 0.5 * left], 1).numpy(), 44100)
    run_dir = tmp_path / "run"
    overrides = [
        f"data.source.folder={folder}",
        "streams.audio.options={sample_rate: 44100, channels: 2, seconds: 0.5}",
        *(f"autoencoder.options.harmonic.{k}={v}" for k, v in SMALL.items()),
        "autoencoder.crop=[4096]",
        "autoencoder.statistics_items=8",
        "data.batch_size=4",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "optimizer.warmup_steps=1",
        "sample.grid=2",
        f"run_dir={run_dir}",
    ]
    assert main(["fit", "audio-notes-codec", *overrides]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["codec"]["item_shape"] == [2, 22050]
    assert report["codec"]["latent_shape"] == [1 + 2 + 2, math.ceil(22050 / 256)]
    assert report["reconstructed"]["samples"] == 2 and "frechet_distance" in report["reconstructed"]
    codec = load_codec(run_dir / "codec.safetensors")
    assert (codec.config.channels, codec.config.sample_rate) == (2, 44100)
    assert len(codec.scale) == len(codec.shift) == 5
