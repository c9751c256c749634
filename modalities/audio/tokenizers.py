"""Two ways to turn a fixed-length waveform batch [B, C, S] into tokens, and back.

- `MelTokenizer`: a normalised log-mel spectrogram (torchaudio), cut into whole columns (one token per p
  frames, all mel bins, 1D positions: the column) or into 2D patches (bins × frames, 2D positions: bin row,
  column). Decoding inverts the normalisation exactly, then InverseMelScale + Griffin-Lim give a waveform.
- `WaveformTokenizer`: raw samples cut into 1D patches of p samples: exact, no vocoder, for short clips.

Both order tokens so that a token's time column is known (`time_column`), which is what the adapter masks
when a clip is shorter than the padded length.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torchaudio.transforms as T
from einops import rearrange
from torch import Tensor

from modalities.common.grids import grid_positions

DB_FLOOR, DB_CENTER, DB_SCALE = -60.0, -50.0, 15.0
"""Log-mel values are dB relative to the peak mel bin of a full-scale sine ((n_fft / 4)² with a Hann
window), floored at -60 dB, then x = (dB + 50) / 15: -60 dB -> -0.67, 0 dB -> 3.33. A fixed, invertible map
that does not depend on the clip, so loudness is learnt, not normalised away.

Why these numbers: the floor puts most bins (those between harmonics) at one constant value, which the
model learns at once and decoding clamps sampler noise to, while Griffin-Lim from floored spectrograms keeps
the pitch of the clips; a lower floor leaves a noisy texture the model spends its capacity on (figures in
docs/performance.md). Centre and scale give the data mean -0.3, std 0.8."""
X_FLOOR, X_CEILING = (DB_FLOOR - DB_CENTER) / DB_SCALE, -DB_CENTER / DB_SCALE


class Tokenizer(ABC):
    """Waveforms [B, C, S] (S fixed: the adapter's clip length) <-> tokens x [B, N, F], pos [B, N, A]."""

    features: int
    axes: int
    columns: int
    """Time columns of tokens covering S samples."""
    samples_per_column: int
    """Samples one time column of tokens covers (its hop)."""

    @abstractmethod
    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """audio [B, C, S] in [-1, 1] -> (x [B, N, F], pos [B, N, A])."""

    @abstractmethod
    def decode(self, x: Tensor) -> Tensor:
        """x [B, N, F] -> audio [B, C, S] in [-1, 1], on the CPU."""

    def identity(self) -> dict[str, str]:
        """What the encoding depends on beyond the adapter's options (see `encoding_identity`)."""
        return {}

    def positions(self, batch_size: int) -> Tensor:
        """pos [B, N, A] of every token (the same for every clip); here A = 1, the time column."""
        return torch.arange(self.columns, dtype=torch.float32)[None, :, None].repeat(batch_size, 1, 1)

    @staticmethod
    def time_column(pos: Tensor) -> Tensor:
        """pos [B, N, A] -> each token's time column [B, N] (the last coordinate)."""
        return pos[..., -1].long()

    def real_columns(self, samples: Tensor) -> Tensor:
        """Clip lengths [B] in samples -> the number of time columns that hold any of their samples [B]."""
        return torch.ceil(samples / self.samples_per_column).long().clamp(1, self.columns)


class WaveformTokenizer(Tokenizer):
    """Raw samples, p per token per channel: x [B, ceil(S/p), p*C] (channels interleaved), pos = patch
    index. S is zero-padded to a multiple of p; decoding crops it back, so the round trip is exact."""

    axes = 1

    def __init__(self, samples: int, channels: int, patch_size: int) -> None:
        self.samples, self.channels, self.patch_size = samples, channels, patch_size
        self.features = patch_size * channels
        self.columns = math.ceil(samples / patch_size)
        self.samples_per_column = patch_size

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.nn.functional.pad(audio, (0, self.columns * self.patch_size - audio.shape[-1]))
        x = rearrange(padded, "b c (n p) -> b n (p c)", p=self.patch_size)
        return x, self.positions(len(x)).to(x.device)

    def decode(self, x: Tensor) -> Tensor:
        audio = rearrange(x.detach().float().cpu(), "b n (p c) -> b c (n p)", c=self.channels)
        return audio[..., : self.samples].clamp(-1, 1)


class MelTokenizer(Tokenizer):
    """Normalised log-mel [B, C, n_mels, frames] as tokens.

    patch_size = p (int): whole columns, x [B, ceil(frames/p), p*C*n_mels], pos = column.
    patch_size = (q, p): 2D patches of q mel bins × p frames, x [B, (n_mels/q)*ceil(frames/p), q*p*C],
    pos = (bin row, column), row-major over (bin rows, columns).
    frames = S // hop + 1 (centred STFT); the last column is padded with the floor value.
    """

    def __init__(
        self,
        sample_rate: int,
        samples: int,
        channels: int,
        patch_size: int | tuple[int, int],
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_max: float,
        griffin_lim_iters: int,
    ) -> None:
        self.bins, self.frames_per_token = (n_mels, patch_size) if isinstance(patch_size, int) else patch_size
        if n_mels % self.bins:
            raise ValueError(f"n_mels {n_mels} must be divisible by the patch's mel bins {self.bins}")
        self.samples, self.channels, self.n_mels = samples, channels, n_mels
        self.axes = 1 if isinstance(patch_size, int) else 2
        self.frames = samples // hop_length + 1
        self.columns = math.ceil(self.frames / self.frames_per_token)
        self.samples_per_column = self.frames_per_token * hop_length
        self.features = self.bins * self.frames_per_token * channels
        self.reference_power = (n_fft / 4) ** 2
        self.mel = T.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_max=f_max
        )
        # gelsd: the mel filter bank is rank-deficient when low bins are narrower than an STFT bin.
        self.inverse_mel = T.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, f_max=f_max, driver="gelsd")
        # Zero initial phases instead of random ones, so that decoding is deterministic.
        self.griffin_lim = T.GriffinLim(
            n_fft, griffin_lim_iters, hop_length=hop_length, power=2.0, rand_init=False, length=samples
        )

    def log_mel(self, audio: Tensor) -> Tensor:
        """audio [B, C, S] -> normalised log-mel [B, C, n_mels, frames], >= -0.5 (see DB_FLOOR)."""
        power = self.mel.to(audio.device)(audio.float())
        decibels = (10 * torch.log10(power / self.reference_power)).clamp_min(DB_FLOOR)
        return (decibels - DB_CENTER) / DB_SCALE

    def mel_power(self, log_mel: Tensor) -> Tensor:
        """The inverse of `log_mel`'s normalisation; values are clamped to [floor, full scale] first (a
        sampler may overshoot)."""
        decibels = log_mel.clamp(X_FLOOR, X_CEILING) * DB_SCALE + DB_CENTER
        return self.reference_power * 10 ** (decibels / 10)

    def to_log_mel(self, x: Tensor) -> Tensor:
        """Tokens x [B, N, F] -> normalised log-mel [B, C, n_mels, frames] (padding frames dropped)."""
        if self.axes == 1:
            mel = rearrange(x, "b n (p c m) -> b c m (n p)", p=self.frames_per_token, c=self.channels)
        else:
            mel = rearrange(
                x,
                "b (h n) (q p c) -> b c (h q) (n p)",
                h=self.n_mels // self.bins,
                q=self.bins,
                c=self.channels,
            )
        return mel[..., : self.frames]

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        mel = self.log_mel(audio)
        padding = self.columns * self.frames_per_token - self.frames
        mel = torch.nn.functional.pad(mel, (0, padding), value=X_FLOOR)
        if self.axes == 1:
            x = rearrange(mel, "b c m (n p) -> b n (p c m)", p=self.frames_per_token)
        else:
            x = rearrange(mel, "b c (h q) (n p) -> b (h n) (q p c)", q=self.bins, p=self.frames_per_token)
        return x, self.positions(len(x)).to(x.device)

    def decode(self, x: Tensor) -> Tensor:
        """Tokens -> log-mel -> mel power -> linear power (least squares, InverseMelScale) -> Griffin-Lim."""
        power = self.mel_power(self.to_log_mel(x.detach().float().cpu()))
        return self.griffin_lim(self.inverse_mel(power)).clamp(-1, 1)

    def positions(self, batch_size: int) -> Tensor:
        if self.axes == 1:
            return super().positions(batch_size)
        return grid_positions(self.n_mels // self.bins, self.columns, batch_size)
