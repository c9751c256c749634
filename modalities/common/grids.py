"""Grids: the (row, column) positions of a grid of tokens, and previews that tile a batch of images into one
picture (with the conversion of a tensor to a pillow image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor

from modalities.common.image_files import pil_mode

PREVIEW_CELL = 64  # smallest preview cell in pixels, so 8×8 digits are visible
PREVIEW_PADDING = 2


def grid_positions(height: int, width: int, batch_size: int, device: torch.device | None = None) -> Tensor:
    """(h, w) coordinates of a height×width patch grid in row-major order: float [B, height*width, 2]."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    pos = rearrange(torch.stack([rows, cols], dim=-1), "h w a -> (h w) a").float()
    return pos.expand(batch_size, -1, -1).clone()


def to_pil(item: Tensor) -> Image.Image:
    """[C, H, W] in [0, 1] -> an 8-bit pillow image."""
    pixels = (item.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    mode = pil_mode(pixels.shape[0])
    array = rearrange(pixels, "c h w -> h w c").numpy()
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)


def grid_image(media: Tensor, cols: int | None = None) -> Tensor:
    """media [B, C, H, W] -> one image [C, rows*(s*H+2)+2, cols*(s*W+2)+2], s the nearest upscale factor;
    `cols` defaults to ceil(sqrt(B))."""
    b, c, h, w = media.shape
    cols = cols or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    scale = math.ceil(PREVIEW_CELL / min(h, w))
    cells = F.interpolate(media, scale_factor=scale, mode="nearest-exact")
    # Empty cells and padding are white, so dark images stay separated.
    cells = torch.cat([cells, cells.new_ones(rows * cols - b, c, h * scale, w * scale)])
    pad = PREVIEW_PADDING
    cells = F.pad(cells, (pad, 0, pad, 0), value=1.0)
    grid = rearrange(cells, "(r k) c h w -> c (r h) (k w)", r=rows, k=cols)
    return F.pad(grid, (0, pad, 0, pad), value=1.0)
