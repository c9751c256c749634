"""The `causal-video` codec kind: a 3-D convolutional VAE that is causal in time, as the video VAEs of
CogVideoX, HunyuanVideo and Wan. Every convolution pads time with copies of the first frame only (never
with future frames) and normalises each frame on its own, so a latent frame depends on no later clip frame;
each level halves H and W, and the first log2(ft) levels also halve time by a stride-2 convolution whose
first output sees the first frame alone. A clip of T = 1 + k·ft frames becomes 1 + k latent frames (an image
is a one-frame clip), [B, C, T, H, W] <-> z [B, D, 1 + k, H / f, W / f].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mmdit.codecs.autoencoder import Posterior, Reconstruction, norm
from mmdit.codecs.config_dict import config_from_dict, config_to_dict
from mmdit.codecs.kinds import CodecKind, kind_options, register_codec_kind
from mmdit.codecs.loaded import time_folding

KIND = "causal-video"


@dataclass(frozen=True)
class CausalVideoConfig:
    """The shape of a `CausalVideoCodec`.

    channels: clip channels C; latent_channels: channels D of z; widths: channels per level (len(widths) - 1
    levels, each halving H and W, so `downsampling` = 2 ** (len(widths) - 1)); temporal_downsampling: ft,
    a power of two up to `downsampling` (the first log2(ft) levels halve time too); blocks: residual blocks
    per level. dims (3) and causal (True) are fixed: they say what `time_folding` reads.
    """

    channels: int
    latent_channels: int = 8
    widths: tuple[int, ...] = (16, 32, 64)
    temporal_downsampling: int = 4
    blocks: int = 1
    dims: int = 3
    causal: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        for name in ("channels", "latent_channels", "blocks", "temporal_downsampling"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"causal-video {name} must be a positive int, got {value!r}")
        if len(self.widths) < 2 or not all(isinstance(w, int) and w >= 1 for w in self.widths):
            raise ValueError(f"causal-video widths must be two or more positive ints, got {self.widths!r}")
        ft = self.temporal_downsampling
        if ft & (ft - 1) or ft > self.downsampling:
            raise ValueError(
                f"causal-video temporal_downsampling must be a power of two up to the spatial downsampling "
                f"{self.downsampling} (one halving per level), got {ft}"
            )
        if self.dims != 3 or self.causal is not True:
            raise ValueError(
                f"a causal-video codec has dims 3 and causal True, got {self.dims}, {self.causal}"
            )

    @property
    def downsampling(self) -> int:
        """Pixels per latent cell along H and W."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CausalVideoConfig:
        """The inverse of `to_dict`; keys with defaults may be left out, unknown keys are an error."""
        return config_from_dict(cls, d, "causal-video")


class CausalConv3d(nn.Module):
    """[B, Ci, T, H, W] -> [B, Co, T', H / s, W / s]: a 3×3×3 convolution over the current and the two
    previous frames (time padded at the front with copies of the first frame, none at the end). With
    `temporal_stride` 2, T = 1 + 2m -> 1 + m and output frame j sees input frames 2j - 2 .. 2j: the first
    output sees the first frame alone."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1, temporal_stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(inputs, outputs, 3, stride=(temporal_stride, stride, stride), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2))


class FrameNorm(nn.Module):
    """GroupNorm of each frame on its own ([B, C, T, H, W]): statistics over a whole clip would let later
    frames shift earlier ones' latents."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = norm(width)

    def forward(self, x: Tensor) -> Tensor:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.norm(frames), "(b t) c h w -> b c t h w", b=x.shape[0])


class CausalResidualBlock(nn.Module):
    """[B, inputs, T, H, W] -> [B, outputs, T, H, W]: two norm → SiLU → causal conv steps beside a skip."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            FrameNorm(inputs),
            nn.SiLU(),
            CausalConv3d(inputs, outputs),
            FrameNorm(outputs),
            nn.SiLU(),
            CausalConv3d(outputs, outputs),
        )
        self.skip = nn.Identity() if inputs == outputs else nn.Conv3d(inputs, outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class CausalUpsample(nn.Module):
    """[B, inputs, T, H, W] -> [B, outputs, T', 2H, 2W]: nearest ×2 in space and, when `temporal`, each
    frame after the first twice (T = 1 + m -> 1 + 2m: the first frame stays alone), then a causal conv."""

    def __init__(self, inputs: int, outputs: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(inputs, outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal:
            x = torch.cat([x[:, :, :1], x[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class CausalVideoCodec(nn.Module):
    """Clips x [B, C, 1 + k·ft, H, W] (H, W divisible by f) -> Posterior over z [B, D, 1 + k, H / f, W / f]
    -> x_hat of x's shape."""

    def __init__(self, config: CausalVideoConfig) -> None:
        super().__init__()
        self.config = config
        widths, levels = config.widths, len(config.widths) - 1
        temporal_levels = int(math.log2(config.temporal_downsampling))
        encoder: list[nn.Module] = [CausalConv3d(config.channels, widths[0])]
        for level in range(levels):
            stride_t = 2 if level < temporal_levels else 1
            encoder.append(CausalConv3d(widths[level], widths[level + 1], 2, stride_t))
            encoder += [
                CausalResidualBlock(widths[level + 1], widths[level + 1]) for _ in range(config.blocks)
            ]
        encoder += [FrameNorm(widths[-1]), nn.SiLU(), CausalConv3d(widths[-1], 2 * config.latent_channels)]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [CausalConv3d(config.latent_channels, widths[-1])]
        for level in reversed(range(levels)):
            decoder += [
                CausalResidualBlock(widths[level + 1], widths[level + 1]) for _ in range(config.blocks)
            ]
            decoder.append(CausalUpsample(widths[level + 1], widths[level], level < temporal_levels))
        decoder += [FrameNorm(widths[0]), nn.SiLU(), CausalConv3d(widths[0], config.channels)]
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: Tensor) -> Posterior:
        """x [B, C, 1 + k·ft, H, W] -> q(z | x) with mean, logvar [B, D, 1 + k, H / f, W / f]."""
        cfg = self.config
        f, ft = cfg.downsampling, cfg.temporal_downsampling
        if (
            x.ndim != 5
            or x.shape[1] != cfg.channels
            or time_folding(cfg).padded_frames(max(x.shape[2], 1)) != x.shape[2]
            or x.shape[3] % f
            or x.shape[4] % f
        ):
            raise ValueError(
                f"clips of shape {tuple(x.shape)}: a causal-video codec takes [B, {cfg.channels}, "
                f"1 + k·{ft}, H, W] with H and W divisible by {f}"
            )
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return Posterior(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """z [B, D, 1 + k, h, w] -> x_hat [B, C, 1 + k·ft, h·f, w·f]."""
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"latents of shape {tuple(z.shape)}: expected [B, {self.config.latent_channels}, T', h, w]"
            )
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Reconstruction:
        """x [B, C, T, H, W] -> the reconstruction of a z sampled (with `generator`) from q(z | x)."""
        posterior = self.encode(x)
        z = posterior.sample(generator)
        return Reconstruction(x_hat=self.decode(z), posterior=posterior, z=z)


def causal_video_config(section: Any, item_shape: tuple[int, ...], adapter: Any) -> CausalVideoConfig:
    """A recipe's `autoencoder.options.causal-video` keys (latent_channels, widths, temporal_downsampling,
    blocks) for clips [C, T, H, W]; C comes from the data."""
    if len(item_shape) != 4:
        raise ValueError(
            f"the causal-video codec is for clips [C, T, H, W], got items of shape {list(item_shape)}"
        )
    options = kind_options(section, KIND)
    if "channels" in options:
        raise ValueError(f"autoencoder.options.{KIND}.channels comes from the video stream; drop it")
    return CausalVideoConfig.from_dict({"channels": item_shape[0], **options})


CAUSAL_VIDEO = register_codec_kind(CodecKind(KIND, CausalVideoConfig, CausalVideoCodec, causal_video_config))
