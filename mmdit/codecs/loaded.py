"""What `load_codec` returns for any codec, ours or a diffusers autoencoder: a frozen model, the shape a
consumer needs of it, and the latent normalisation the diffusion model sees, (z − shift) · scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CodecShape:
    """What a consumer needs of a codec's config (`AutoencoderConfig` has the first four attributes): media
        [B, channels, *extent] over `dims` axes <-> latents [B, latent_channels, *extent / downsampling].

        A video codec (dims 3, extent (T, H, W)) says how it folds time apart from space: `downsampling` is
    then the spatial factor and `temporal_downsampling` the frames per latent frame; `causal` codecs
    (CogVideoX, HunyuanVideo, Wan) encode the first frame alone, so T = 1 + k · ft frames <-> 1 + k latent
    frames and an image is a one-frame clip. None (and configs without the attribute) fold time as every
    axis (`time_folding`)."""

    dims: int
    channels: int
    latent_channels: int
    downsampling: int
    temporal_downsampling: int | None = None
    causal: bool = False


@dataclass(frozen=True)
class TimeFolding:
    """How a codec maps the first (time) axis of [B, C, T, H, W] clips: `factor` frames per latent frame,
    and with `causal` the first frame on its own."""

    factor: int
    causal: bool

    def padded_frames(self, frames: int) -> int:
        """The fewest frames >= `frames` that the codec takes: 1 + k · factor (causal) or k · factor."""
        if frames < 1:
            raise ValueError(f"a clip needs at least one frame, got {frames}")
        if self.causal:
            return 1 + -(-(frames - 1) // self.factor) * self.factor
        return -(-frames // self.factor) * self.factor

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` frames (padded first, as `padded_frames`)."""
        padded = self.padded_frames(frames)
        return 1 + (padded - 1) // self.factor if self.causal else padded // self.factor

    def pad(self, clips: Tensor) -> Tensor:
        """Clips [B, C, T, H, W] -> [B, C, padded_frames(T), H, W], the last frame repeated (as shorter clips
        of a batch are: a zero frame would be a cut to black)."""
        missing = self.padded_frames(clips.shape[2]) - clips.shape[2]
        return torch.cat([clips, clips[:, :, -1:].expand(-1, -1, missing, -1, -1)], dim=2)

    def first_frame(self, latent_frame: Tensor) -> Tensor:
        """Latent frame indices [...] -> the index of the first clip frame each covers [...]: a latent token
        is real when this frame is (frame masks carry through the latent)."""
        if self.causal:
            return (latent_frame * self.factor - self.factor + 1).clamp_min(0)
        return latent_frame * self.factor


def time_folding(config: Any) -> TimeFolding:
    """The time folding of a codec config: its `temporal_downsampling` and `causal` where it has them
    (video codecs), else its `downsampling` along time, as along every axis, not causal."""
    factor = getattr(config, "temporal_downsampling", None)
    if factor is None:
        return TimeFolding(config.downsampling, False)
    return TimeFolding(int(factor), bool(getattr(config, "causal", False)))


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
