"""2-D patch tokens, ViT / DiT style: a [B, C, H, W] grid of values cut into non-overlapping p×p patches,
one token each with its (row, column) in patches as its position.

`PatchAdapter` is the half of an adapter that does not depend on what the values are: options, the stream
and the layout; the image adapter (pixels in [0, 1], PNG files) and the latent adapter (autoencoder latents,
safetensors files) add the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from mmdit.contract import ModalityAdapter, StreamSpec, Tokens
from modalities.common.grids import grid_image, grid_positions, to_pil

POSITIONS = ("rope", "sincos")


def patchify(images: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """images [B, C, H, W] -> (x [B, (H/p)(W/p), p*p*C], pos [B, N, 2]); token index = h * (W/p) + w."""
    b, _, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"image shape {tuple(images.shape)}: H and W must be divisible by patch size {p}")
    x = rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
    return x, grid_positions(h // p, w // p, b, images.device)


def unpatchify(x: Tensor, pos: Tensor, p: int, channels: int) -> Tensor:
    """x [B, N, p*p*C] in `patchify`'s order, pos [B, N, 2] -> images [B, C, H, W], grid read from pos."""
    h, w = int(pos[..., 0].max()) + 1, int(pos[..., 1].max()) + 1
    if x.shape[1:] != (h * w, p * p * channels):
        raise ValueError(
            f"tokens {tuple(x.shape)} do not fill a {h}×{w} grid of {p}×{p}×{channels} patches "
            f"(expected [B, {h * w}, {p * p * channels}])"
        )
    return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=h, w=w, p=p, q=p, c=channels)


class PatchAdapter(ModalityAdapter):
    """Media [B, C, H, W] as tokens x [B, (H/p)(W/p), p*p*C], pos (h, w) in patches, mask all True.

    `size` = (H, W) is the default sampling size and fixes the extent of a sin-cos position table.
    Subclasses give `name`, their own `__init__` (the registry reads its options from it) and the
    modality's encode / decode, files, datasets and evaluation.
    """

    def __init__(
        self, channels: int, patch_size: int, size: tuple[int, int] | list[int], positions: str
    ) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"{self.name} positions must be one of {POSITIONS}, got {positions!r}")
        self.channels, self.patch_size, self.positions = channels, patch_size, positions
        self.size = self._check_size(size)

    def _check_size(self, size: Sequence[int]) -> tuple[int, int]:
        if len(size) != 2 or size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(
                f"{self.name} size {tuple(size)} must be (H, W) divisible by patch size {self.patch_size}"
            )
        return int(size[0]), int(size[1])

    def stream(self, name: str) -> StreamSpec:
        p = self.patch_size
        grid = (self.size[0] // p, self.size[1] // p) if self.positions == "sincos" else None
        return StreamSpec(name, features=self.channels * p * p, positions=self.positions, axes=2, grid=grid)

    def layout(
        self,
        batch_size: int,
        numbers: Mapping[str, Tensor] | None = None,
        size: Sequence[int] | None = None,
    ) -> Tokens:
        """Zeros x [B, N, p*p*C], positions and an all-True mask for media of `size` = (H, W) (default
        the adapter's); `numbers` is unused."""
        h, w = self.size if size is None else self._check_size(size)
        p = self.patch_size
        pos = grid_positions(h // p, w // p, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.channels * p * p)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))

    def preview(self, media: Tensor, path: str | Path) -> Path:
        """media [B, C, H, W] in [0, 1] -> a PNG grid of ceil(sqrt(B)) columns; cells are upscaled
        (nearest) to at least 64 px."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(grid_image(media.detach().float().cpu())).save(path, format="PNG")
        return path
