"""Waveforms through a learned codec: the latents of a codec-stage export (`mmdit fit` of a recipe with an
`autoencoder:` section, codec.safetensors) as tokens. The codec is frozen; the diffusion model learns its
normalised latents (z - shift) · scale, as SD3 learns its VAE's, and decoding is the codec's decoder, so
nothing is lost to a vocoder.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from mmdit.codecs import codec_digest, load_codec
from modalities.audio.tokenizers import Tokenizer


class CodecTokenizer(Tokenizer):
    """Audio [B, C, S] -> latents [B, D, T] (T = ceil(S / r), r the codec's downsampling) -> tokens of p
    latent frames, x [B, ceil(T / p), p*D] (frames slowest, latent channels fastest), pos = the token's
    time column (1D RoPE). S is zero-padded to T·r for the encoder and decoding crops it back."""

    axes = 1

    def __init__(self, path: str | Path, samples: int, channels: int, patch_size: int) -> None:
        codec = load_codec(path)
        self.digest = codec_digest(path)
        config = codec.config
        if config.dims != 1 or config.channels != channels:
            raise ValueError(
                f"codec {path} encodes {config.dims}-D media of {config.channels} channels; audio of "
                f"{channels} channel(s) needs a 1-D codec of as many (an audio codec recipe's export)"
            )
        self.codec, self.samples, self.channels, self.patch_size = codec, samples, channels, patch_size
        self.downsampling, self.latent_channels = config.downsampling, config.latent_channels
        self.latent_frames = math.ceil(samples / self.downsampling)
        self.columns = math.ceil(self.latent_frames / patch_size)
        self.samples_per_column = patch_size * self.downsampling
        self.features = patch_size * self.latent_channels

    def identity(self) -> dict[str, str]:
        return {"codec": self.digest}

    def _model(self, device: torch.device) -> torch.nn.Module:
        """The frozen codec on `device` (moved there once: adapters are not modules, so it does not follow
        the training module)."""
        return self.codec.model.to(device)

    @torch.no_grad()
    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.nn.functional.pad(
            audio.float(), (0, self.latent_frames * self.downsampling - audio.shape[-1])
        )
        z = self._model(audio.device).encode(padded).mode()
        z = (z - self.codec.shift) * self.codec.scale
        z = torch.nn.functional.pad(z, (0, self.columns * self.patch_size - self.latent_frames))
        x = rearrange(z, "b d (n p) -> b n (p d)", p=self.patch_size)
        return x, self.positions(len(x)).to(x.device)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        z = rearrange(x.float(), "b n (p d) -> b d (n p)", p=self.patch_size)[..., : self.latent_frames]
        z = z / self.codec.scale + self.codec.shift
        audio = self._model(z.device).decode(z)[..., : self.samples]
        return audio.detach().cpu().clamp(-1, 1)
