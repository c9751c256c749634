"""Reconstruction losses for waveform codecs: the multi-resolution STFT loss of Parallel WaveGAN (Yamamoto
et al. 2020), which Stable Audio's codec also trains with, comparing magnitude spectrograms at several FFT
sizes so that neither time nor frequency resolution is favoured."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

EPS = 1e-7  # keeps the convergence of a silent target finite
FLOOR_DB = -128.0  # log magnitudes are floored this far below a full-scale sine's peak bin: at n_fft 1024
# that is the judge's log-mel floor (power 1e-8, `metrics.judge_log_mel`, where a full-scale sine reads
# +48 dB), so the loss hears what the judge hears. Digital silence in a target would otherwise ask for
# log 0, and that one unreachable term would outweigh everything audible. (At -80 dB the loss was deaf to
# all below -32 dB in the judge's bins, and the harmonic codec left the decayed partials of plucks 35 dB
# too loud.)


def multi_resolution_stft_loss(
    prediction: Tensor,
    target: Tensor,
    ffts: Sequence[int] = (256, 512, 1024, 2048),
    hop_fraction: float = 0.25,
) -> Tensor:
    """Waveforms prediction, target [B, C, S] -> a scalar: for each FFT size n (hop n · hop_fraction, a Hann
    window, channels folded into the batch) the spectral convergence ‖|Y| − |X|‖_F / ‖|Y|‖_F plus the mean
    |log max(|Y|, floor) − log max(|X|, floor)|, floor = 128 dB below a full-scale sine's peak bin (n / 4
    with a Hann window), with Y the target's STFT and X the prediction's; averaged over the sizes. S must
    be at least max(ffts)."""
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must be equal [B, C, S]"
        )
    if not ffts:
        raise ValueError("ffts must name at least one FFT size")
    if not 0 < hop_fraction <= 1:
        raise ValueError(f"hop_fraction must be in (0, 1], got {hop_fraction}")
    samples = prediction.shape[-1]
    if samples < max(ffts):
        raise ValueError(f"waveforms of {samples} samples are shorter than the largest FFT size {max(ffts)}")
    # torch.stft wants float32 or float64 (not half precision, as under autocast), and [batch, samples].
    x = prediction.reshape(-1, samples).float()
    y = target.reshape(-1, samples).float()
    losses = []
    for n_fft in ffts:
        x_mag, y_mag = (_magnitude(w, n_fft, max(1, int(n_fft * hop_fraction))) for w in (x, y))
        convergence = torch.linalg.norm(y_mag - x_mag) / torch.linalg.norm(y_mag).clamp_min(EPS)
        floor = n_fft / 4 * 10 ** (FLOOR_DB / 20)
        log_distance = (torch.log(y_mag.clamp_min(floor)) - torch.log(x_mag.clamp_min(floor))).abs().mean()
        losses.append(convergence + log_distance)
    return torch.stack(losses).mean()


def _magnitude(waveform: Tensor, n_fft: int, hop: int) -> Tensor:
    """[N, S] -> |STFT| [N, n_fft // 2 + 1, frames]."""
    window = torch.hann_window(n_fft, device=waveform.device, dtype=waveform.dtype)
    return torch.stft(waveform, n_fft, hop_length=hop, window=window, return_complex=True).abs()
