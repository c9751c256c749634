"""A differentiable harmonic-plus-noise synthesiser (DDSP, Engel et al. 2020): frame-rate controls -> a
waveform. The oscillators own the phase, 2π·Σf0/sr, so a decoder only predicts slowly varying magnitudes.

Controls at frame t describe the sound around sample (t + ½)·hop: f0 and harmonic amplitudes are linearly
interpolated to samples between frame centres (held at the ends); the noise is a fixed-seed white buffer,
cut into Hann windows of 2·hop samples (50% overlap, they sum to one), each filtered in the frequency domain
by its frame's band magnitudes (linearly interpolated over the FFT bins, zero phase) and overlap-added, so
decoding is a function of the controls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_SEED = 0
NOISE_SAMPLES = 1 << 16  # the fixed noise buffer, tiled for longer clips


def upsample(controls: Tensor, hop: int) -> Tensor:
    """controls [B, T, ...] at frame centres (t + ½)·hop -> [B, T·hop, ...] per sample, linear between
    centres and held before the first and after the last."""
    shape = controls.shape
    flat = controls.reshape(shape[0], shape[1], -1).transpose(1, 2)  # [B, F, T]
    samples = F.interpolate(flat, scale_factor=hop, mode="linear", align_corners=False)
    return samples.transpose(1, 2).reshape(shape[0], shape[1] * hop, *shape[2:])


def harmonics(f0: Tensor, amplitudes: Tensor, sample_rate: int, hop: int) -> Tensor:
    """Σ_k a_k(n)·sin(k·φ(n)), φ(n) = 2π·Σ_{m≤n} f0(m) / sample_rate: f0 [B, T] Hz, amplitudes [B, T, K]
    (harmonic k = 1..K) -> [B, T·hop]. A harmonic at or above Nyquist is silent where it is."""
    f0_samples = upsample(f0, hop)  # [B, S]
    gains = F.interpolate(amplitudes.transpose(1, 2), scale_factor=hop, mode="linear")  # [B, K, S]
    k = torch.arange(1, amplitudes.shape[-1] + 1, device=f0.device, dtype=f0.dtype)[:, None]
    # Cycles accumulate in float64 and only their fractional part u is kept (sin(2πk·c) = sin(2πk·u) for
    # whole k), so the phase stays exact over long clips in float32 too.
    cycles = torch.frac(torch.cumsum(f0_samples.double() / sample_rate, -1)).to(f0.dtype)
    audible = k * f0_samples[:, None] < sample_rate / 2  # [B, K, S]
    waves = torch.sin((2 * math.pi) * k * cycles[:, None])
    return (gains * audible * waves).sum(1)


def noise_buffer(samples: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The fixed white noise, uniform in [-1, 1): [samples] (the same values for every call)."""
    generator = torch.Generator().manual_seed(NOISE_SEED)
    buffer = torch.rand(NOISE_SAMPLES, generator=generator, dtype=torch.float64) * 2 - 1
    return buffer.repeat(-(-samples // NOISE_SAMPLES))[:samples].to(device=device, dtype=dtype)


def filtered_noise(bands: Tensor, hop: int) -> Tensor:
    """bands [B, T, N] linear magnitudes of N bands spread evenly from 0 Hz to Nyquist -> noise [B, T·hop]:
    frame t's Hann window (2·hop samples, centred on (t + ½)·hop) of the fixed noise, its spectrum times
    the bands interpolated over the hop + 1 bins, overlap-added. The edge frames are repeated once outside
    the clip, so every sample lies under two windows."""
    bands = torch.cat([bands[:, :1], bands, bands[:, -1:]], 1)  # [B, T + 2, N]
    batch, frames, count = bands.shape
    window_size = 2 * hop
    noise = noise_buffer((frames + 1) * hop, bands.dtype, bands.device)
    window = torch.hann_window(window_size, periodic=True, dtype=bands.dtype, device=bands.device)
    segments = noise.unfold(0, window_size, hop) * window  # [T + 2, 2·hop]
    spectrum = torch.fft.rfft(segments)  # [T + 2, hop + 1]
    gains = F.interpolate(
        bands.reshape(batch * frames, 1, count), size=hop + 1, mode="linear", align_corners=True
    ).reshape(batch, frames, hop + 1)
    filtered = torch.fft.irfft(spectrum * gains, window_size)  # [B, T + 2, 2·hop]
    summed = F.fold(
        filtered.transpose(1, 2), output_size=(1, (frames + 1) * hop), kernel_size=(1, window_size),
        stride=(1, hop),
    ).reshape(batch, -1)  # fmt: skip
    # Segment j starts at j·hop and is centred at (j + 1)·hop; j = t + 1 is frame t, centred at
    # (t + ½)·hop of the clip: the clip starts at 1.5·hop.
    start = 3 * hop // 2
    return summed[:, start : start + (frames - 2) * hop]


def synthesise(f0: Tensor, amplitudes: Tensor, bands: Tensor, sample_rate: int, hop: int) -> Tensor:
    """Harmonics plus filtered noise: f0 [B, T] Hz, amplitudes [B, T, K], bands [B, T, N] -> [B, T·hop]."""
    if f0.ndim != 2 or amplitudes.shape[:2] != f0.shape or bands.shape[:2] != f0.shape:
        raise ValueError(
            f"controls must share [B, T]: f0 {tuple(f0.shape)}, amplitudes {tuple(amplitudes.shape)} "
            f"([B, T, K]), bands {tuple(bands.shape)} ([B, T, N])"
        )
    return harmonics(f0, amplitudes, sample_rate, hop) + filtered_noise(bands, hop)
