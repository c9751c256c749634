"""Images through a learned codec, as SD3 and DiT diffuse them: a frozen 2-D autoencoder (our codec export, a
.safetensors file, or a local diffusers `AutoencoderKL` folder) maps pixels in [-1, 1] to latents, and the
diffusion model sees the normalised latents (z - shift) · scale. `ImageAdapter(codec=PATH)` patchifies them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from mmdit.codecs import codec_digest, load_codec


class ImageCodec:
    """A frozen image codec: values [B, C, H, W] in [-1, 1] <-> normalised latents [B, D, H / f, W / f],
    D = `latent_channels`, f = `downsampling`.

    path:     the codec (`load_codec` reads it); its config must have dims 2 and `channels` channels.
    channels: C, the image channels the adapter reads.
    """

    def __init__(self, path: str | Path, channels: int) -> None:
        self.path = str(path)
        codec = load_codec(path)
        config = codec.config
        if config.dims != 2 or config.channels != channels:
            raise ValueError(
                f"image codec {self.path} encodes {config.dims}-D media of {config.channels} channel(s); "
                f"images of {channels} channel(s) need a 2-D codec of as many (an image codec's export or "
                "a diffusers AutoencoderKL folder)"
            )
        self.codec = codec
        self.model = codec.model
        self.scale, self.shift = codec.scale, codec.shift
        self.latent_channels, self.downsampling = config.latent_channels, config.downsampling
        self.digest = codec_digest(path)

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
        """values [B, C, H, W] in [-1, 1] -> (mode(q(z | x)) - shift) · scale [B, D, H / f, W / f], in the
        codec's dtype (float32 unless the model was cast), on the values' device; autocast off (VAEs are
        unstable in half precision)."""
        model, dtype = self._on(values.device)
        with torch.autocast(values.device.type, enabled=False):
            z = model.encode(values.to(dtype)).mode()
        return (z - self.shift) * self.scale

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents [B, D, h, w] -> the decoder's values [B, C, h·f, w·f] (about [-1, 1], not
        clamped), on the latents' device."""
        model, dtype = self._on(latents.device)
        z = latents.to(dtype) / self.scale + self.shift
        with torch.autocast(latents.device.type, enabled=False):
            return model.decode(z)
