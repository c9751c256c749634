"""A frozen codec as a stream's tokenizer uses it: media values <-> the normalised latents (z − shift) · scale
that the diffusion model learns, on whatever device the values are, autocast off (VAEs are unstable in half
precision). Shared by every adapter with a `codec` option (audio, images)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from mmdit.codecs.digest import codec_digest
from mmdit.codecs.export import load_codec
from mmdit.codecs.loaded import time_folding


class FrozenCodec:
    """values [B, C, *extent] <-> normalised latents [B, D, *extent / f], D = `latent_channels`, f =
    `downsampling` (along time, for clips, `time`: a `TimeFolding`).

    path:     the codec (`load_codec` reads it: an export or a diffusers folder).
    dims, channels: what the adapter's media are; a codec of other dims or channels is an error naming the
              path, and `hint` says which codec would fit.
    """

    def __init__(self, path: str | Path, dims: int, channels: int, media: str, hint: str) -> None:
        self.path = str(path)
        codec = load_codec(path)
        config = codec.config
        if config.dims != dims or config.channels != channels:
            raise ValueError(
                f"codec {self.path} encodes {config.dims}-D media of {config.channels} channel(s); "
                f"{media} of {channels} channel(s) need a {dims}-D codec of as many ({hint})"
            )
        self.model = codec.model
        self.scale, self.shift = (_per_channel(v, dims) for v in (codec.scale, codec.shift))
        self.latent_channels, self.downsampling = config.latent_channels, config.downsampling
        # Along the time axis of clips [B, C, T, H, W] (video codecs fold it apart from space).
        self.time = time_folding(config)

    @cached_property
    def digest(self) -> str:
        """sha256 of the codec (read when a token cache first asks, not at every adapter build)."""
        return codec_digest(self.path)

    def _on(self, device: torch.device) -> tuple[torch.nn.Module, torch.dtype]:
        """The frozen model on `device` (moved there on first use: adapters are not modules, so it does not
        follow the training module) and the dtype it computes in."""
        parameter = next(self.model.parameters(), None)
        if parameter is not None and parameter.device != device:
            self.model.to(device)
            parameter = next(self.model.parameters())
        return self.model, torch.float32 if parameter is None else parameter.dtype

    @torch.no_grad()
    def encode(self, values: Tensor) -> Tensor:
        """values [B, C, *extent] -> (mode(q(z | x)) − shift) · scale [B, D, *extent / f], in the codec's
        dtype (float32 unless the model was cast), on the values' device."""
        model, dtype = self._on(values.device)
        with torch.autocast(values.device.type, enabled=False):
            z = model.encode(values.to(dtype)).mode()
        shift, scale = (_on_device(v, z) for v in (self.shift, self.scale))
        return (z - shift) * scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents [B, D, *latent_extent] -> the decoder's values [B, C, *latent_extent · f] (not
        clamped), on the latents' device."""
        model, dtype = self._on(latents.device)
        shift, scale = (_on_device(v, latents) for v in (self.shift, self.scale))
        z = latents.to(dtype) / scale + shift
        with torch.autocast(latents.device.type, enabled=False):
            return model.decode(z)


def _per_channel(value: float | list[float], dims: int) -> float | Tensor:
    """A scalar stays one; one value per latent channel becomes a tensor [D, 1, ...] (dims ones) that
    broadcasts over latents [B, D, *extent]."""
    if isinstance(value, list):
        return torch.tensor(value).reshape(-1, *(1,) * dims)
    return value


def _on_device(value: float | Tensor, like: Tensor) -> float | Tensor:
    return value.to(like.device, like.dtype) if isinstance(value, Tensor) else value
