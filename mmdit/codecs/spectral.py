"""An STFT front end for waveform codecs: the convolutions of a `ConvAutoencoder` run over STFT frames
(the real and imaginary parts of every frequency bin as channels) and decoding ends in an inverse STFT, as
Vocos does. A harmonic note is a few steady bins there, where a waveform convolution must first learn to
oscillate; the hop is the first downsampling for free."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class STFTFrames(nn.Module):
    """Waveforms [B, C, S] <-> frames [B, 2·C·F, S / hop] (F = n_fft // 2 + 1 bins; channels ordered
    (channel, real/imaginary, bin)), S a multiple of `hop`. Hann window; values are divided by half the
    window's sum, so a full-scale sine's bin has magnitude about 1."""

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        # Not persistent: a function of (n_fft, hop), which the config stores, so exports hold no copy.
        self.register_buffer("window", torch.hann_window(n_fft, dtype=torch.float64), persistent=False)

    def features(self, channels: int) -> int:
        """Channels of the frames of a `channels`-channel waveform."""
        return 2 * channels * (self.n_fft // 2 + 1)

    def analyse(self, waveform: Tensor) -> Tensor:
        """[B, C, S] -> [B, 2·C·F, S / hop]: centred frames (reflect-padded), the one past the end dropped so
        that frames and hops correspond one to one."""
        batch, channels, samples = waveform.shape
        window = self.window.to(waveform.dtype)
        spectrum = torch.stft(
            waveform.reshape(batch * channels, samples),
            self.n_fft,
            self.hop,
            window=window,
            center=True,
            return_complex=True,
        )[..., : samples // self.hop]
        parts = torch.view_as_real(spectrum / self._gain(window))
        return rearrange(parts, "(b c) f t r -> b (c r f) t", b=batch)

    def synthesise(self, frames: Tensor) -> Tensor:
        """[B, 2·C·F, T] -> [B, C, T · hop]: the inverse STFT, the dropped last frame restored as a copy of
        the one before (it only shapes the final hop of samples)."""
        batch, _, count = frames.shape
        parts = rearrange(frames, "b (c r f) t -> (b c) f t r", r=2, f=self.n_fft // 2 + 1)
        # view_as_complex takes float32 or float64 only (not the half precision of autocast).
        parts = parts if parts.dtype == torch.float64 else parts.float()
        spectrum = torch.view_as_complex(parts.contiguous())
        spectrum = torch.cat([spectrum, spectrum[..., -1:]], dim=-1)
        window = self.window.to(spectrum.real.dtype)
        waveform = torch.istft(
            spectrum * self._gain(window),
            self.n_fft,
            self.hop,
            window=window,
            center=True,
            length=count * self.hop,
        )
        return rearrange(waveform, "(b c) s -> b c s", b=batch)

    @staticmethod
    def _gain(window: Tensor) -> Tensor:
        return window.sum() / 2
