"""What `load_codec` returns for any codec, ours or a diffusers autoencoder: a frozen model, the shape a
consumer needs of it, and the latent normalisation the diffusion model sees, (z − shift) · scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class CodecShape:
    """What a consumer needs of a codec's config (`AutoencoderConfig` has the same four attributes): media
    [B, channels, *extent] over `dims` axes <-> latents [B, latent_channels, *extent / downsampling]."""

    dims: int
    channels: int
    latent_channels: int
    downsampling: int


@dataclass
class LoadedCodec:
    """A loaded codec; z is normalised as (z − shift) · scale, scale and shift each a float or one float per
    latent channel.

    model: a module frozen in eval mode with `encode(x) -> Posterior` (mmdit's, over z [B, latent_channels,
    *extent / downsampling]) and `decode(z) -> Tensor` x_hat [B, channels, *extent]: a model of a registered
    codec kind (mmdit.codecs.kinds) or a `DiffusersAutoencoder`. config: the kind's config (dims, channels,
    latent_channels, downsampling and more), or the `CodecShape` of a diffusers one.
    """

    model: nn.Module
    config: Any
    scale: float | list[float]
    shift: float | list[float]
    extra: dict[str, Any]
