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


def check_image(path: str | Path) -> None:
    """That `path` opens as an image (its header only: a truncated body shows when it is read)."""
    try:
        with Image.open(path):  # parses the header, reads no pixels
            pass
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None = None) -> Tensor:
    """One image file -> float [channels, H, W] in [0, 1], resized (bicubic) to `size` = (H, W) if given.
    8-bit, palette and 16-bit files alike: pillow's own conversion of a 16-bit image to 8 bits clips at
    255 (a mid-grey 16-bit PNG would load white), so high-depth grey is scaled here instead."""
    mode = pil_mode(channels)
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_DEPTH:
                pixels = _high_depth_grey(image, channels, size)
            else:
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


HIGH_DEPTH = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}
"""Pillow's grey modes deeper than 8 bits -> the value of full scale (16-bit PNGs open as I;16 or I; float
TIFFs as F, taken to be in [0, 1])."""


def _high_depth_grey(image: Image.Image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """A 16-bit / 32-bit grey image -> float [H, W, channels] in [0, 1], resized in float precision (RGB
    repeats the grey; RGBA adds an opaque alpha)."""
    grey = Image.fromarray(np.asarray(image, dtype=np.float32) / HIGH_DEPTH[image.mode], mode="F")
    if size is not None:
        grey = grey.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    values = np.clip(np.asarray(grey, dtype=np.float32), 0, 1)
    stacked = np.repeat(values[:, :, None], min(channels, 3), axis=2)
    return np.concatenate([stacked, np.ones_like(values)[:, :, None]], axis=2) if channels == 4 else stacked
