"""A harmonic-plus-noise codec (DDSP, Engel et al. 2020): per frame of `hop` samples the latent is the
measured pitch, the measured loudness of each channel, and a few learned timbre channels; the decoder turns
them into harmonic amplitudes and noise bands for `harmonic_synth`, whose oscillators own the phase.

Latent [B, 1 + C + Z, T] (T = S / hop, frame t centred on sample (t + ½)·hop):
- channel 0, pitch: log2 of the mid channel's YIN f0, mapped so that 60-1,000 Hz spans [-1, 1]; frames
  with no pitch (quiet or aperiodic) take the clip's median voiced f0, so the channel stays smooth;
- channels 1..C, loudness: each channel's RMS level over 2·hop samples in dB, floored at -80 dB, as
  (dB + 40) / 20;
- Z timbre channels: a diagonal Gaussian from a small conv encoder over log STFT magnitudes.
The measured channels are deterministic (zero variance, no KL). The decoder, convolutions over the latent
frames, gives each channel a gain, a softmax over the harmonics below Nyquist and noise band magnitudes,
all scaled by that channel's loudness, so a diffusion model that writes a louder loudness channel gets a
louder note.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdit.codecs.autoencoder import LOGVAR_RANGE, Posterior, Reconstruction, ResidualBlock, conv, norm
from mmdit.codecs.config_dict import config_from_dict, config_to_dict
from mmdit.codecs.kinds import CodecKind, channel_statistics, kind_options, register_codec_kind
from modalities.audio.harmonic_synth import synthesise
from modalities.audio.metrics import PITCH_RANGE_HZ, YIN_THRESHOLD, frame_loudness_db, yin_frames

FLOOR_DB = -80.0  # loudness floor: silence
QUIET_DB = 30.0  # frames this far below the clip's loudest have no pitch
PITCH_CENTRE = 0.5 * math.log2(PITCH_RANGE_HZ[0] * PITCH_RANGE_HZ[1])  # log2 Hz mapped to 0
PITCH_HALF_RANGE = 0.5 * math.log2(PITCH_RANGE_HZ[1] / PITCH_RANGE_HZ[0])  # octaves mapped to ±1
NOISE_OFFSET = 2.0  # noise bands start 40 dB below the loudness (above the gate): notes are mostly harmonic
GATE = 1e-3  # harmonic and noise magnitudes (0-2) below this are silent
PITCH_UNIT_CENTS = 100.0  # the diffusion model sees the pitch channel in semitones (see harmonic_statistics)


@dataclass(frozen=True)
class HarmonicCodecConfig:
    """channels C and sample_rate: the audio's; hop: samples per latent frame (even); timbre_channels Z:
    learned latent channels; harmonics K and noise_bands N: the synthesiser's controls per channel; width,
    blocks, kernel (odd): the encoder's and decoder's convolutions; n_fft: the encoder's STFT size."""

    channels: int
    sample_rate: int
    hop: int = 256
    timbre_channels: int = 4
    harmonics: int = 64
    noise_bands: int = 32
    width: int = 128
    blocks: int = 2
    kernel: int = 3
    n_fft: int = 1024

    dims = 1  # waveforms

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"harmonic codec {field.name} must be a positive int, got {value!r}")
        if self.hop % 2 or self.kernel % 2 == 0:
            raise ValueError(f"harmonic codec hop must be even and kernel odd, got {self.hop}, {self.kernel}")
        if self.n_fft < self.hop:
            raise ValueError(f"harmonic codec n_fft ({self.n_fft}) must be at least hop ({self.hop})")

    @property
    def latent_channels(self) -> int:
        """1 pitch + C loudness + Z timbre channels."""
        return 1 + self.channels + self.timbre_channels

    @property
    def measured_channels(self) -> int:
        """Pitch and loudness: the leading channels that are measured, not learned."""
        return 1 + self.channels

    @property
    def downsampling(self) -> int:
        return self.hop

    @property
    def yin_frame(self) -> int:
        """YIN's window: a power of two of at least 2.5 periods of the lowest pitch (1,024 at 16 kHz)."""
        return 1 << math.ceil(math.log2(2.5 * self.sample_rate / PITCH_RANGE_HZ[0]))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HarmonicCodecConfig:
        """The inverse of `to_dict`; keys with defaults may be left out, an unknown key is an error."""
        return config_from_dict(cls, d, "harmonic codec")


@dataclass
class MeasuredPosterior(Posterior):
    """A posterior whose first `measured` channels are exact (measured, not learned): sampling leaves them
    at the mean and the KL counts only the other channels."""

    measured: int = 0

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        z = super().sample(generator)
        return torch.cat([self.mean[:, : self.measured], z[:, self.measured :]], 1)

    def kl(self) -> Tensor:
        learned = Posterior(self.mean[:, self.measured :], self.logvar[:, self.measured :])
        return learned.kl()


def exp_sigmoid(x: Tensor) -> Tensor:
    """DDSP's exponentiated sigmoid 2·σ(x)^ln 10: 0.41 at x = 0, 2 at most, 90 dB below that by x = -5,
    so magnitudes span a wide range in log terms within a few units."""
    return 2 * torch.sigmoid(x) ** math.log(10)


def gated(magnitudes: Tensor) -> Tensor:
    """Magnitudes below `GATE` (of exp_sigmoid's 2) become exact zeros, the rest move down by GATE."""
    return (magnitudes - GATE).clamp_min(0)


def centred_frames(audio: Tensor, size: int, hop: int) -> Tensor:
    """audio [..., T·hop] -> frames [..., T, size], frame t centred on sample (t + ½)·hop (zeros beyond the
    clip)."""
    pad = size // 2 - hop // 2
    return F.pad(audio, (pad, size - hop - pad)).unfold(-1, size, hop)


class HarmonicCodec(nn.Module):
    """Audio x [B, C, S] (S divisible by hop) -> MeasuredPosterior over z [B, 1 + C + Z, S / hop] -> x_hat
    [B, C, S]: the `ConvAutoencoder` interface, with a harmonic-plus-noise synthesiser as the decoder's
    last stage."""

    def __init__(self, config: HarmonicCodecConfig) -> None:
        super().__init__()
        self.config = config
        c, k, w = config.channels, config.kernel, config.width
        spectrum = c * (config.n_fft // 2 + 1)
        encoder: list[nn.Module] = [conv(1, spectrum + config.measured_channels, w, k)]
        encoder += [ResidualBlock(1, w, w, k) for _ in range(config.blocks)]
        encoder += [norm(w), nn.SiLU(), conv(1, w, 2 * config.timbre_channels, k)]
        self.encoder = nn.Sequential(*encoder)
        self.controls = 1 + config.harmonics + config.noise_bands  # gain, harmonics, bands per channel
        decoder: list[nn.Module] = [conv(1, config.latent_channels, w, k)]
        decoder += [ResidualBlock(1, w, w, k) for _ in range(config.blocks)]
        decoder += [norm(w), nn.SiLU(), conv(1, w, c * self.controls, k)]
        self.decoder = nn.Sequential(*decoder)

    @torch.no_grad()
    def measure(self, x: Tensor) -> Tensor:
        """x [B, C, S] -> the measured channels [B, 1 + C, S / hop]: normalised pitch, then loudness."""
        cfg = self.config
        frames = centred_frames(x.double().mean(1), cfg.yin_frame, cfg.hop)  # [B, T, W]
        hz, aperiodicity = yin_frames(frames, cfg.sample_rate)
        loudness = frame_loudness_db(centred_frames(x.double(), 2 * cfg.hop, cfg.hop))  # [B, C, T]
        mid = frame_loudness_db(centred_frames(x.double().mean(1), 2 * cfg.hop, cfg.hop))  # [B, T]
        voiced = (aperiodicity < YIN_THRESHOLD) & (mid > mid.amax(-1, keepdim=True) - QUIET_DB)
        voiced &= mid > FLOOR_DB
        voiced_hz = torch.where(voiced, hz, torch.nan)
        fill = voiced_hz.nanmedian(-1, keepdim=True).values.nan_to_num(2.0**PITCH_CENTRE)
        hz = torch.where(voiced, hz, fill)
        pitch = (torch.log2(hz) - PITCH_CENTRE) / PITCH_HALF_RANGE
        level = (loudness.clamp_min(FLOOR_DB) + 40) / 20
        return torch.cat([pitch[:, None], level], 1).to(x.dtype)

    def encode(self, x: Tensor) -> MeasuredPosterior:
        """x [B, C, S] -> q(z | x), mean and logvar [B, 1 + C + Z, S / hop]; the measured channels' logvar
        is the floor of `LOGVAR_RANGE` and they are never sampled."""
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.channels or x.shape[-1] % cfg.hop:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected [B, {cfg.channels}, S] with S divisible by "
                f"the hop {cfg.hop}"
            )
        measured = self.measure(x)
        window = torch.hann_window(cfg.n_fft, dtype=x.dtype, device=x.device)
        spectrum = torch.fft.rfft(centred_frames(x, cfg.n_fft, cfg.hop) * window).abs()  # [B, C, T, F]
        features = torch.log(spectrum + 1e-5).permute(0, 1, 3, 2).flatten(1, 2)  # [B, C·F, T]
        mean, logvar = self.encoder(torch.cat([features, measured], 1)).chunk(2, dim=1)
        floor = torch.full_like(measured, LOGVAR_RANGE[0])
        return MeasuredPosterior(
            torch.cat([measured, mean], 1), torch.cat([floor, logvar], 1), cfg.measured_channels
        )

    def synth_controls(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [B, 1 + C + Z, T] -> f0 [B·C, T] Hz, harmonic amplitudes [B·C, T, K], noise bands [B·C, T, N]
        (channels folded into the batch)."""
        cfg = self.config
        if z.ndim != 3 or z.shape[1] != cfg.latent_channels:
            raise ValueError(f"latent of shape {tuple(z.shape)}: expected [B, {cfg.latent_channels}, T]")
        f0 = (2.0 ** (z[:, 0] * PITCH_HALF_RANGE + PITCH_CENTRE)).clamp(1.0, cfg.sample_rate / 2)
        # The floor is silence: a measured -80 dB decodes to exact zeros, not to a -80 dB note.
        decibels = 20 * z[:, 1 : cfg.measured_channels] - 40
        rms = (10.0 ** (decibels / 20) - 10.0 ** (FLOOR_DB / 20)).clamp_min(0)  # [B, C, T]
        out = self.decoder(z).unflatten(1, (cfg.channels, self.controls)).transpose(2, 3)  # [B, C, T, ·]
        gain, logits, bands = out.split([1, cfg.harmonics, cfg.noise_bands], -1)
        k = torch.arange(1, cfg.harmonics + 1, device=z.device, dtype=z.dtype)
        audible = k * f0[:, None, :, None] < cfg.sample_rate / 2
        # Unit-norm amplitudes over the audible harmonics, each from DDSP's exponentiated sigmoid, gated:
        # a harmonic that should be absent is exactly silent a few units below zero. (A softmax's absent
        # harmonics stayed near -50 dB, and ungated ones near -100 dB, below what the STFT loss's -80 dB
        # floor hears but above the judge's log-mel floor.)
        spread = gated(exp_sigmoid(logits)) * audible
        spread = spread / torch.linalg.vector_norm(spread, dim=-1, keepdim=True).clamp_min(1e-7)
        # Σ_k a_k² / 2 = (rms · 2σ(gain))²: an even gain puts the harmonics at the measured level.
        amplitudes = math.sqrt(2) * rms[..., None] * 2 * torch.sigmoid(gain) * spread
        # Uniform noise has an RMS of 1/√3: band magnitudes of √3 · rms give about the measured level.
        noise = math.sqrt(3) * rms[..., None] * gated(exp_sigmoid(bands - NOISE_OFFSET))
        f0 = f0[:, None].expand(-1, cfg.channels, -1)
        return f0.flatten(0, 1), amplitudes.flatten(0, 1), noise.flatten(0, 1)

    def decode(self, z: Tensor) -> Tensor:
        """z [B, 1 + C + Z, T] -> x_hat [B, C, T·hop]."""
        f0, amplitudes, noise = self.synth_controls(z)
        audio = synthesise(f0, amplitudes, noise, self.config.sample_rate, self.config.hop)
        return audio.unflatten(0, (len(z), self.config.channels))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Reconstruction:
        """x [B, C, S] -> the reconstruction of a z sampled (with `generator`) from q(z | x)."""
        posterior = self.encode(x)
        z = posterior.sample(generator)
        return Reconstruction(x_hat=self.decode(z), posterior=posterior, z=z)


def harmonic_config(section: Any, item_shape: tuple[int, ...], adapter: Any) -> HarmonicCodecConfig:
    """A recipe's `autoencoder.options.harmonic` keys for audio items [C, S] at the adapter's sample rate."""
    if len(item_shape) != 2:
        raise ValueError(f"the harmonic codec is for audio [C, S], got items of shape {list(item_shape)}")
    options = kind_options(section, "harmonic")
    for fixed in ("channels", "sample_rate"):
        if fixed in options:
            raise ValueError(f"autoencoder.options.harmonic.{fixed} comes from the audio stream; drop it")
    return HarmonicCodecConfig.from_dict(
        {"channels": item_shape[0], "sample_rate": adapter.sample_rate, **options}
    )


def harmonic_statistics(z: Tensor) -> tuple[list[float], list[float]]:
    """Latents [N, 1 + C + Z, T] -> per-channel (shift, scale), unit variance for every channel but pitch,
    whose scale makes one unit a semitone (`PITCH_UNIT_CENTS`; the notes' spread is then ~7 units).

    Why: the judge wants a note within 50 cents and, for its harmonic-to-noise ratio, a pitch that holds
    still within a few cents, far finer than the channel's spread over the notes. Normalised to unit
    spread, a semitone was 0.14 units and the diffusion model's errors of a few hundredths of a unit were
    16 cents off the note and 25 cents of jitter between frames; pitch costs the generated notes 20 dB of
    harmonic-to-noise ratio there (docs/audio.md#learned-codec)."""
    shift, scale = channel_statistics(z)
    scale[0] = 1200 * PITCH_HALF_RANGE / PITCH_UNIT_CENTS  # pitch units (octaves / half range) -> semitones
    return shift, scale


HARMONIC = register_codec_kind(
    CodecKind("harmonic", HarmonicCodecConfig, HarmonicCodec, harmonic_config, statistics=harmonic_statistics)
)
