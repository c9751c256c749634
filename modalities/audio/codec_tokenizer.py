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

from mmdit.codecs import FrozenCodec
from modalities.audio.tokenizers import Tokenizer


class CodecTokenizer(Tokenizer):
    """Audio [B, C, S] -> latents [B, D, T] (T = ceil(S / r), r the codec's downsampling) -> tokens of p
    latent frames, x [B, ceil(T / p), p*D] (frames slowest, latent channels fastest), pos = the token's
    time column (1D RoPE). S is zero-padded to T·r for the encoder and decoding crops it back."""

    axes = 1

    def __init__(self, path: str | Path, samples: int, channels: int, patch_size: int) -> None:
        self.codec = FrozenCodec(path, 1, channels, "audio", "an audio codec recipe's export")
        self.samples, self.channels, self.patch_size = samples, channels, patch_size
        self.downsampling, self.latent_channels = self.codec.downsampling, self.codec.latent_channels
        self.latent_frames = math.ceil(samples / self.downsampling)
        self.columns = math.ceil(self.latent_frames / patch_size)
        self.samples_per_column = patch_size * self.downsampling
        self.features = patch_size * self.latent_channels

    def identity(self) -> dict[str, str]:
        return {"codec": self.codec.digest}

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        padding = self.latent_frames * self.downsampling - audio.shape[-1]
        z = self.codec.encode(torch.nn.functional.pad(audio.float(), (0, padding)))
        z = torch.nn.functional.pad(z, (0, self.columns * self.patch_size - self.latent_frames))
        x = rearrange(z, "b d (n p) -> b n (p d)", p=self.patch_size)
        return x, self.positions(len(x)).to(x.device)

    def decode(self, x: Tensor) -> Tensor:
        z = rearrange(x.float(), "b n (p d) -> b d (n p)", p=self.patch_size)[..., : self.latent_frames]
        return self.codec.decode(z)[..., : self.samples].detach().cpu().clamp(-1, 1)
