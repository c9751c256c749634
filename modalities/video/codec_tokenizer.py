"""Clips through a learned video codec: the latents of a frozen codec (a `causal-video` export of the codec
stage, or any video codec `FrozenCodec` loads) as spacetime tokens. Clips stay what datasets give, files
load and evaluation judges; the codec's encoder maps them to normalised latents (z - shift) · scale for the
diffusion model and its decoder maps sampled latents back, so an 8-frame 32×32 clip costs the model
3 × 4 × 4 tokens (ft 4 causal, f 4, 1×2×2 latent cells) instead of 128 pixel tubelets.

Time folds by the codec's `FrozenCodec.time`: clips are padded to `time.padded_frames(T)` frames by
repeating the last one, and a latent token is real when the first clip frame its latent frame covers is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmdit.codecs import FrozenCodec
from mmdit.contract import StreamSpec, Tokens
from modalities.common.patches import grid_positions, patchify, unpatchify
from modalities.video.frame_masks import frame_mask


class VideoCodecTokenizer:
    """Clips [B, C, T, H, W] in [0, 1] -> [-1, 1] -> latents [B, D, T', H/f, W/f] (T' =
    `time.latent_frames(T)`) -> tokens of pt × ph × pw latent cells, x [B, N, pt·ph·pw·D] with the cell
    block's (t, h, w) index as its RoPE position; decoding runs the codec's decoder and trims to `frames`."""

    def __init__(
        self, path: str | Path, channels: int, tubelet: Sequence[int], size: Sequence[int], frames: int
    ):
        self.codec = FrozenCodec(path, 3, channels, "clips", "a video codec recipe's export")
        self.channels, self.frames, self.size = channels, frames, tuple(size)
        self.tubelet = tuple(tubelet)
        self.time = self.codec.time
        f = self.codec.downsampling
        latent = (self.time.latent_frames(frames), *(n // f for n in self.size))
        if any(n % f for n in self.size) or any(n % p for n, p in zip(latent, self.tubelet, strict=True)):
            raise ValueError(
                f"video size {list(self.size)} must be divisible by the codec's downsampling {f}, and its "
                f"{frames} frames' latent extent {list(latent)} (t, h, w) by the tubelet "
                f"{list(self.tubelet)} of latent cells (codec {self.codec.path})"
            )
        self.grid = tuple(n // p for n, p in zip(latent, self.tubelet, strict=True))

    @property
    def features(self) -> int:
        """Latent values per token: pt · ph · pw · D."""
        return math.prod(self.tubelet) * self.codec.latent_channels

    def identity(self) -> dict[str, str]:
        return {"codec": self.codec.digest}

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.features, positions="rope", axes=3)

    def mask(self, pos: Tensor, frames: Tensor | None) -> Tensor:
        """pos [B, N, 3], real frames per clip [B] (None: all real) -> mask [B, N]: a token is real when the
        first clip frame of its first latent frame is."""
        return frame_mask(self.time.first_frame(pos[..., 0].long() * self.tubelet[0]), frames)

    def encode(self, media: Tensor, frames: Tensor | None) -> Tokens:
        """Clips [B, C, T, H, W] in [0, 1] -> Tokens(x [B, N, F] normalised latents, pos [B, N, 3], mask)."""
        if media.ndim != 5 or media.shape[1] != self.channels or tuple(media.shape[3:]) != self.size:
            raise ValueError(
                f"clips must be [B, C={self.channels}, T, H, W] with (H, W) = {self.size}, got "
                f"{tuple(media.shape)}"
            )
        x, pos = patchify(self.codec.encode(self.time.pad(media).float() * 2 - 1), self.tubelet)
        return Tokens(x, pos, self.mask(pos, frames))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens in `encode`'s order -> clips [B, C, frames, H, W] in [0, 1] (clamped), on the tokens'
        device; padding frames are decoded too, the caller trims with its frame counts."""
        z = unpatchify(tokens.x.float(), tokens.pos, self.tubelet, self.codec.latent_channels)
        clips = self.codec.decode(z)[:, :, : self.frames]
        return ((clips + 1) / 2).clamp(0, 1)

    def layout(self, batch_size: int, frames: Tensor | None) -> Tokens:
        """Zeros x [B, N, F] and positions of a full clip's latent grid; `frames` [B] masks shorter clips."""
        pos = grid_positions(self.grid, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.features)
        return Tokens(x, pos, self.mask(pos, frames))
