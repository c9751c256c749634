"""SDF grids through a learned codec: the latents of a codec-stage export (`mmdit fit` of a recipe with an
`autoencoder:` section over mesh SDF grids, codec.safetensors) as tokens. The grid is still what datasets
cache, files load to and evaluation judges; the frozen codec's encoder maps it to normalised latents
(z - shift) · scale for the diffusion model, and its decoder maps sampled latents back to a grid, so a
64³ surface costs the model only (64 / f / p)³ tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
import trimesh
from torch import Tensor

from mmdit.codecs import FrozenCodec
from mmdit.contract import StreamSpec, Tokens
from modalities.common.patches import grid_positions, patchify, unpatchify
from modalities.mesh.sdf import check_grids, grid_to_mesh, sdf_grid


class SdfCodecTokenizer:
    """Grids [B, 1, R, R, R] -> latents [B, D, r, r, r] (r = R / f, f the codec's downsampling) -> tokens of
    p³ latent cells, x [B, (r/p)³, p³·D] (patchify's order: cells slowest, latent channels fastest), with
    the block's (x, y, z) index as its RoPE position. Decoding is the codec's decoder, clamped to [-1, 1]."""

    def __init__(self, path: str | Path, resolution: int, patch_size: int, truncation: float) -> None:
        self.codec = FrozenCodec(path, 3, 1, "SDF grids", "a mesh codec recipe's export")
        f = self.codec.downsampling
        if resolution % (f * patch_size):
            raise ValueError(
                f"sdf resolution {resolution} must be divisible by the codec's downsampling {f} × "
                f"patch_size {patch_size} = {f * patch_size} (codec {self.codec.path})"
            )
        if truncation <= 0:
            raise ValueError(f"sdf truncation must be > 0 cells, got {truncation}")
        self.resolution, self.patch_size, self.truncation = resolution, patch_size, truncation
        self.latent_channels = self.codec.latent_channels
        self.cells = resolution // f // patch_size

    @property
    def settings(self) -> dict:
        """The grid's settings, as the plain sdf tokenizer's: both stages share one cache of grids."""
        return {"kind": "sdf", "resolution": self.resolution, "truncation": self.truncation}

    def identity(self) -> dict[str, str]:
        return {"codec": self.codec.digest}

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.patch_size**3 * self.latent_channels, positions="rope", axes=3)

    def from_mesh(self, mesh: trimesh.Trimesh, name: str) -> Tensor:
        """A mesh in the unit cube -> grid [1, R, R, R]."""
        return sdf_grid(mesh, self.resolution, self.truncation, name)

    def encode(self, media: Tensor) -> Tokens:
        """grids [B, 1, R, R, R] -> Tokens(x [B, (r/p)³, p³·D], pos [B, (r/p)³, 3], mask all True)."""
        check_grids(media, self.resolution)
        x, pos = patchify(self.codec.encode(media.float()), (self.patch_size,) * 3)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens in `encode`'s order -> grids [B, 1, R, R, R] in [-1, 1], on the CPU."""
        z = unpatchify(tokens.x.float(), tokens.pos, (self.patch_size,) * 3, self.latent_channels)
        return self.codec.decode(z).detach().cpu().clamp(-1, 1)

    def layout(self, batch_size: int) -> Tokens:
        pos = grid_positions((self.cells,) * 3, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.patch_size**3 * self.latent_channels)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))

    def geometry(self, item: Tensor) -> trimesh.Trimesh:
        """grid [1, R, R, R] -> its cleaned marching-cubes surface."""
        return grid_to_mesh(item)
