"""Image datasets: scikit-learn's bundled 8×8 digits (no download) and a folder of a user's own images.

Both yield `{"media": Tensor [C, H, W] float in [0, 1], "labels": {name: int}}` and carry `classes`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import Dataset

from modalities.folders import class_folder_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SPLITS = ("train", "heldout")


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


def split_indices(count: int, split: str, heldout_fraction: float, seed: int) -> np.ndarray:
    """The indices of `split` among `count` items, from one fixed-seed permutation shared by both splits."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    permutation = np.random.default_rng(seed).permutation(count)
    heldout = round(count * heldout_fraction)
    # Keep at least one item on each side whenever there are two, so evaluation always has real data.
    if count > 1 and heldout_fraction > 0:
        heldout = min(max(heldout, 1), count - 1)
    return np.sort(permutation[:heldout] if split == "heldout" else permutation[heldout:])


class DigitsDataset(Dataset):
    """scikit-learn's 1,797 handwritten digits: media [1, 8, 8] in [0, 1], labels {"digit": 0..9}.

    `index` [N] holds the split's rows of `load_digits()`, `images` [N, 1, 8, 8] and `labels` [N] its data.
    """

    classes = {"digit": [str(d) for d in range(10)]}

    def __init__(self, split: str, seed: int = 0, heldout_fraction: float = 0.2) -> None:
        digits = load_digits()
        self.index = split_indices(len(digits.target), split, heldout_fraction, seed)
        # The raw pixels count ink on a 0..16 scale.
        self.images = torch.from_numpy(digits.images[self.index] / 16.0).float().unsqueeze(1)
        self.labels = torch.from_numpy(digits.target[self.index]).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"media": self.images[i], "labels": {"digit": int(self.labels[i])}}


class ImageFolder(Dataset):
    """Images under `root` (recursively), read lazily with pillow.

    Labels: with every image inside a first-level sub-folder, the sub-folder's name is the class
    (`classes = {"class": sorted names}`); with every image directly in `root` there are no labels.
    Items: media [channels, H, W] in [0, 1], resized to `size` = (H, W) when given.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: tuple[int, int] | None = None,
        channels: int = 3,
        heldout_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        pil_mode(channels)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.channels = channels
        files, labels, names = class_folder_files(self.root, IMAGE_SUFFIXES, "image")
        self.classes = {"class": names} if names else {}
        index = split_indices(len(files), split, heldout_fraction, seed)
        self.files = [files[i] for i in index]
        self.labels = [labels[i] if names else None for i in index]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        media = read_image(self.files[i], self.channels, self.size)
        labels = {} if self.labels[i] is None else {"class": self.labels[i]}
        return {"media": media, "labels": labels}
