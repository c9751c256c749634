"""The harmonic-plus-noise synthesiser against a float64 numpy reference written from its definition: sines
at the running phase 2π·Σf0/sr with linearly interpolated controls, and fixed noise filtered per Hann
window and overlap-added."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalities.audio.harmonic_synth import filtered_noise, harmonics, noise_buffer, synthesise

RATE, HOP = 8000, 16


def _interpolate(frames: np.ndarray, hop: int) -> np.ndarray:
    """[T, ...] controls at frame centres (t + ½)·hop -> [T·hop, ...] per sample, held at the ends."""
    samples = np.arange(len(frames) * hop)
    centres = (np.arange(len(frames)) + 0.5) * hop - 0.5
    flat = frames.reshape(len(frames), -1)
    columns = [np.interp(samples, centres, flat[:, j]) for j in range(flat.shape[1])]
    return np.stack(columns, -1).reshape(len(samples), *frames.shape[1:])


def _harmonics_reference(f0: np.ndarray, amplitudes: np.ndarray) -> np.ndarray:
    f0_samples = _interpolate(f0, HOP)
    gains = _interpolate(amplitudes, HOP)
    phase = 2 * np.pi * np.cumsum(f0_samples) / RATE
    out = np.zeros(len(f0_samples))
    for k in range(1, amplitudes.shape[-1] + 1):
        audible = k * f0_samples < RATE / 2
        out += np.where(audible, gains[:, k - 1] * np.sin(k * phase), 0.0)
    return out


def _noise_reference(bands: np.ndarray) -> np.ndarray:
    frames = len(bands)
    noise = noise_buffer((frames + 3) * HOP, torch.float64, torch.device("cpu")).numpy()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2 * HOP) / (2 * HOP))
    out = np.zeros((frames + 3) * HOP)
    padded = np.concatenate([bands[:1], bands, bands[-1:]])
    for j, magnitudes in enumerate(padded):
        segment = noise[j * HOP : j * HOP + 2 * HOP] * window
        bins = np.linspace(0, len(magnitudes) - 1, HOP + 1)  # bin j lies between bands, evenly spread
        gains = np.interp(bins, np.arange(len(magnitudes)), magnitudes)
        out[j * HOP : j * HOP + 2 * HOP] += np.fft.irfft(np.fft.rfft(segment) * gains, 2 * HOP)
    # Segment j is centred at (j + 1)·hop; frame t = j − 1 belongs at (t + ½)·hop of the clip.
    return out[3 * HOP // 2 : 3 * HOP // 2 + frames * HOP]


def _controls(seed: int, frames: int = 12, harmonics_count: int = 10, bands: int = 6):
    rng = np.random.default_rng(seed)
    f0 = rng.uniform(200, 900, frames)  # harmonics 5-10 of the higher ones cross Nyquist (4 kHz)
    return f0, rng.uniform(0, 0.3, (frames, harmonics_count)), rng.uniform(0, 1, (frames, bands))


@pytest.mark.parametrize("seed", [0, 1])
def test_the_synthesiser_equals_a_float64_reference(seed):
    f0, amplitudes, bands = _controls(seed)
    f0_t, amplitudes_t, bands_t = (torch.from_numpy(a)[None] for a in (f0, amplitudes, bands))
    harmonic = harmonics(f0_t, amplitudes_t, RATE, HOP)[0].numpy()
    noise = filtered_noise(bands_t, HOP)[0].numpy()
    assert harmonic.shape == noise.shape == (12 * HOP,)
    np.testing.assert_allclose(harmonic, _harmonics_reference(f0, amplitudes), rtol=0, atol=1e-10)
    np.testing.assert_allclose(noise, _noise_reference(bands), rtol=0, atol=1e-10)
    both = synthesise(f0_t, amplitudes_t, bands_t, RATE, HOP)[0].numpy()
    np.testing.assert_allclose(both, harmonic + noise, rtol=0, atol=1e-12)


def test_a_steady_tone_has_its_pitch_and_amplitude_and_nothing_above_nyquist():
    f0 = torch.full((1, 50), 1500.0, dtype=torch.float64)
    amplitudes = torch.zeros(1, 50, 4, dtype=torch.float64)
    amplitudes[..., 0], amplitudes[..., 2] = 0.5, 0.25  # harmonic 3 (4.5 kHz) is above Nyquist (4 kHz)
    audio = harmonics(f0, amplitudes, RATE, HOP)[0]
    n = torch.arange(len(audio), dtype=torch.float64)
    # The running phase starts one sample in: φ(n) = 2π·f0·(n + 1)/sr.
    expected = 0.5 * torch.sin(2 * torch.pi * 1500 * (n + 1) / RATE)
    torch.testing.assert_close(audio, expected, rtol=0, atol=1e-9)


def test_noise_is_fixed_and_scales_with_its_bands():
    bands = torch.full((2, 20, 5), 0.5, dtype=torch.float64)
    first, second = filtered_noise(bands, HOP), filtered_noise(bands, HOP)
    assert torch.equal(first, second) and torch.equal(first[0], first[1])
    torch.testing.assert_close(filtered_noise(2 * bands, HOP), 2 * first, rtol=0, atol=1e-12)
    # Flat bands of 1 pass the Hann-windowed noise unchanged; the windows overlap-add to one.
    flat = filtered_noise(torch.ones(1, 20, 5, dtype=torch.float64), HOP)[0]
    noise = noise_buffer(23 * HOP, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(flat, noise[3 * HOP // 2 : 3 * HOP // 2 + 20 * HOP], rtol=0, atol=1e-12)


def test_the_synthesiser_passes_gradients_to_its_controls():
    f0, amplitudes, bands = (torch.from_numpy(a)[None].float() for a in _controls(2))
    amplitudes.requires_grad_(True)
    bands.requires_grad_(True)
    synthesise(f0, amplitudes, bands, RATE, HOP).square().sum().backward()
    assert amplitudes.grad.abs().sum() > 0 and bands.grad.abs().sum() > 0
    assert torch.isfinite(amplitudes.grad).all() and torch.isfinite(bands.grad).all()


def test_controls_of_unequal_frames_are_an_error_naming_the_shapes():
    with pytest.raises(ValueError, match=r"f0 \(1, 4\), amplitudes \(1, 5, 3\)"):
        synthesise(torch.ones(1, 4), torch.ones(1, 5, 3), torch.ones(1, 4, 2), RATE, HOP)
