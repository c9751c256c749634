"""A convolutional VAE over 1-D, 2-D or 3-D grids (waveforms, images, SDF volumes): residual blocks and
strided convolutions down to a Gaussian latent [B, latent_channels, *extent / downsampling], and nearest
upsampling back up, as the Oobleck and AutoencoderKL codecs whose latents a diffusion model then learns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmdit.codecs.config_dict import config_from_dict, config_to_dict
from mmdit.codecs.spectral import STFTFrames

STRIDES = (2, 4, 8)
MAX_GROUPS = 32
NORMS = ("group", "none")
LOGVAR_RANGE = (-30.0, 20.0)  # exp(-30) ... exp(20): keeps exp(logvar) and the KL finite in float32


@dataclass(frozen=True)
class AutoencoderConfig:
    """The shape of a `ConvAutoencoder`.

    dims: 1, 2 or 3 spatial axes; channels: input channels C; latent_channels: channels of z; widths:
    channels per level; strides: the downsampling between consecutive levels (len(widths) - 1 entries, each
    2, 4 or 8); blocks: residual blocks per level; kernel: the odd kernel size of every non-strided conv;
    patch: 1, or an even number of cells per axis that the first conv strides over (kernel 2·patch, so
    windows overlap) and a transposed conv of the same shape restores at the end (overlap-add, no seams
    between patches), so that every other layer runs at 1/patch of the resolution: for waveforms, few
    wide matrix products instead of many thin ones; norm: "group" (GroupNorm before every SiLU) or "none"
    (the model is then a pure convolution: a crop's encoding is the whole item's, cropped, away from the
    crop's border, so training on crops matches using whole items); stft: None, or (n_fft, hop) for
    waveforms (dims 1, patch 1): the convolutions run over STFT frames (`STFTFrames`, real and imaginary
    parts of every bin as channels) and decoding ends in an inverse STFT, so the hop is the first
    downsampling.
    """

    dims: int
    channels: int
    latent_channels: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    blocks: int = 1
    kernel: int = 3
    patch: int = 1
    norm: str = "group"
    stft: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # Lists (as JSON gives them) become tuples, so that configs compare and hash by value.
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "strides", tuple(self.strides))
        if self.stft is not None:
            object.__setattr__(self, "stft", tuple(self.stft))
        if self.dims not in (1, 2, 3):
            raise ValueError(f"dims must be 1, 2 or 3, got {self.dims!r}")
        for name in ("channels", "latent_channels", "blocks", "patch"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.widths or not all(_is_int(w) and w >= 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {self.widths!r}")
        if len(self.strides) != len(self.widths) - 1:
            raise ValueError(
                f"strides must have len(widths) - 1 = {len(self.widths) - 1} entries (one per level after "
                f"the first), got {self.strides!r}"
            )
        if not all(_is_int(s) and s in STRIDES for s in self.strides):
            raise ValueError(f"strides must each be one of {STRIDES}, got {self.strides!r}")
        if self.patch > 1 and self.patch % 2:
            raise ValueError(f"patch must be 1 or even (its kernel is 2·patch, centred), got {self.patch}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if not _is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int (to keep extents), got {self.kernel!r}")
        if self.stft is not None:
            self._check_stft()

    def _check_stft(self) -> None:
        if len(self.stft) != 2 or not all(_is_int(v) and v >= 1 for v in self.stft):
            raise ValueError(f"stft must be (n_fft, hop), two positive ints, got {self.stft!r}")
        n_fft, hop = self.stft
        if n_fft % 2 or n_fft < 2 * hop:
            # Hann windows overlap-add to a constant only when they overlap: hop <= n_fft / 2.
            raise ValueError(f"stft (n_fft, hop) = {self.stft}: n_fft must be even and at least 2 * hop")
        if self.dims != 1 or self.patch != 1:
            raise ValueError(
                f"stft is for waveforms: dims 1 and patch 1, got dims {self.dims}, patch {self.patch}"
            )

    @property
    def downsampling(self) -> int:
        """How many input positions one latent position covers along each axis: patch (or the STFT hop) ×
        the strides."""
        hop = 1 if self.stft is None else self.stft[1]
        return self.patch * hop * math.prod(self.strides)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderConfig:
        """The inverse of `to_dict`; keys with defaults (blocks, kernel, patch, norm, stft) may be left out
        (exports written before `norm` existed used GroupNorm, its default)."""
        return config_from_dict(cls, d, "autoencoder")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class Posterior:
    """The encoder's diagonal Gaussian q(z | x): mean, logvar [B, latent_channels, *latent_extent]."""

    mean: Tensor
    logvar: Tensor

    def __post_init__(self) -> None:
        self.logvar = self.logvar.clamp(*LOGVAR_RANGE)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + exp(logvar / 2) · ε, ε ~ N(0, I): [B, latent_channels, *latent_extent]. With a (CPU)
        generator ε is drawn on the CPU and moved, so a seed gives the same z on every device."""
        if generator is None:
            noise = torch.randn_like(self.mean)
        else:
            noise = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype)
            noise = noise.to(self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def mode(self) -> Tensor:
        """The most likely z, the mean: [B, latent_channels, *latent_extent]."""
        return self.mean

    def kl(self) -> Tensor:
        """KL(q(z | x) ‖ N(0, I)) summed over every latent element: [B]."""
        per_element = self.mean.square() + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * per_element.flatten(1).sum(1)


@dataclass
class Reconstruction:
    """One pass through the autoencoder: x_hat [B, C, *extent], z [B, latent_channels, *latent_extent]
    sampled from `posterior`."""

    x_hat: Tensor
    posterior: Posterior
    z: Tensor


def conv(
    dims: int, inputs: int, outputs: int, kernel: int, stride: int = 1, padding: int | None = None
) -> nn.Module:
    """nn.Conv1d / 2d / 3d by `dims`; padding defaults to kernel // 2, which keeps an odd kernel's extent."""
    layer = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    return layer(inputs, outputs, kernel, stride=stride, padding=kernel // 2 if padding is None else padding)


def transposed_conv(dims: int, inputs: int, outputs: int, stride: int) -> nn.Module:
    """The inverse of a patch conv (kernel 2·stride, stride, padding stride / 2): extent L -> L·stride."""
    layer = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    return layer(inputs, outputs, 2 * stride, stride=stride, padding=stride // 2)


def norm(width: int, kind: str = "group") -> nn.Module:
    """GroupNorm with the most groups (at most 32) that divide `width`, or nothing for kind "none"."""
    if kind == "none":
        return nn.Identity()
    groups = max(g for g in range(1, min(MAX_GROUPS, width) + 1) if width % g == 0)
    return nn.GroupNorm(groups, width)


class ResidualBlock(nn.Module):
    """[B, inputs, *extent] -> [B, outputs, *extent]: two norm → SiLU → conv steps beside a skip (a 1×1
    conv when the width changes); `norm_kind` as `norm`'s."""

    def __init__(self, dims: int, inputs: int, outputs: int, kernel: int, norm_kind: str = "group") -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm(inputs, norm_kind),
            nn.SiLU(),
            conv(dims, inputs, outputs, kernel),
            norm(outputs, norm_kind),
            nn.SiLU(),
            conv(dims, outputs, outputs, kernel),
        )
        self.skip = nn.Identity() if inputs == outputs else conv(dims, inputs, outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class ConvAutoencoder(nn.Module):
    """x [B, C, *extent] -> Posterior over z [B, latent_channels, *extent / downsampling] -> x_hat [B, C,
    *extent], every extent divisible by `config.downsampling`."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        d, k, widths = config.dims, config.kernel, config.widths
        p = config.patch
        self.frames = None if config.stft is None else STFTFrames(*config.stft)
        inputs = config.channels if self.frames is None else self.frames.features(config.channels)
        first = conv(d, inputs, widths[0], 2 * p, stride=p, padding=p // 2) if p > 1 else None
        encoder: list[nn.Module] = [first or conv(d, inputs, widths[0], k)]
        width = widths[0]
        for level, level_width in enumerate(widths):
            for _ in range(config.blocks):
                encoder.append(ResidualBlock(d, width, level_width, k, config.norm))
                width = level_width
            if level < len(config.strides):
                # Kernel 2s, stride s, padding s / 2 (s even): an extent L divisible by s maps to L / s.
                s = config.strides[level]
                encoder.append(conv(d, width, width, 2 * s, stride=s, padding=s // 2))
        encoder += [norm(width, config.norm), nn.SiLU(), conv(d, width, 2 * config.latent_channels, k)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [conv(d, config.latent_channels, widths[-1], k)]
        width = widths[-1]
        for level in reversed(range(len(widths))):
            for _ in range(config.blocks):
                decoder.append(ResidualBlock(d, width, widths[level], k, config.norm))
                width = widths[level]
            if level > 0:
                s = config.strides[level - 1]
                decoder += [nn.Upsample(scale_factor=s, mode="nearest"), conv(d, width, width, k)]
        last = transposed_conv(d, width, inputs, p) if p > 1 else conv(d, width, inputs, k)
        decoder += [norm(width, config.norm), nn.SiLU(), last]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: Tensor) -> Posterior:
        """x [B, C, *extent] -> q(z | x) with mean, logvar [B, latent_channels, *extent / downsampling]."""
        self._check(x, self.config.channels, "input")
        factor = self.config.downsampling
        if any(n % factor for n in x.shape[2:]):
            raise ValueError(
                f"input of shape {tuple(x.shape)}: every extent must be divisible by the downsampling "
                f"factor {factor}"
            )
        features = x if self.frames is None else self.frames.analyse(x)
        mean, logvar = self.encoder(features).chunk(2, dim=1)
        return Posterior(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """z [B, latent_channels, *latent_extent] -> x_hat [B, C, *latent_extent * downsampling]."""
        self._check(z, self.config.latent_channels, "latent")
        x_hat = self.decoder(z)
        return x_hat if self.frames is None else self.frames.synthesise(x_hat)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Reconstruction:
        """x [B, C, *extent] -> the reconstruction of a z sampled (with `generator`) from q(z | x)."""
        posterior = self.encode(x)
        z = posterior.sample(generator)
        return Reconstruction(x_hat=self.decode(z), posterior=posterior, z=z)

    def _check(self, x: Tensor, channels: int, what: str) -> None:
        if x.ndim != 2 + self.config.dims or x.shape[1] != channels:
            raise ValueError(
                f"{what} of shape {tuple(x.shape)}: expected [B, {channels}, ...] with "
                f"{self.config.dims} spatial axes"
            )
