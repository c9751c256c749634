"""Image files through pillow: channel counts and pillow modes, and reading a file into a float tensor.

The image adapter reads and writes single images with these; the video adapter reads folders of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def pil_mode(channels: int) -> str:
    """Pillow mode for a channel count (1 -> "L", 3 -> "RGB", 4 -> "RGBA")."""
    if channels not in PIL_MODES:
        raise ValueError(f"image files hold 1, 3 or 4 channels, got channels={channels}")
    return PIL_MODES[channels]


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None) -> Tensor:
    """One image file -> float [channels, H, W] in [0, 1], resized (bicubic) to `size` = (H, W) if given."""
    mode = pil_mode(channels)
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None:
                image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # Pillow reports broken files through several exception types; the caller needs the file's name.
        raise ValueError(f"cannot read image {path}: {err}") from err
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(rearrange(pixels, "h w c -> c h w").copy())
