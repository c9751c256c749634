"""scikit-learn's bundled 8×8 handwritten digits (no download): the image recipes' dataset, and the source of
the moving-digits clips, of the placed digits and of the digit judges."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from modalities.common.splits import split_indices


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


POSITIONS = ("left", "right", "top", "bottom")
"""Where a placed digit sits on its 16×16 canvas: the middle of that half, one word each, so that a caption
names it and a description can be scored on it."""

PLACED_SIZE = 16


class PlacedDigitsDataset(Dataset):
    """The digits on a 16×16 black canvas, each at one of `POSITIONS`: media [1, 16, 16] in [0, 1], labels
    {"digit": 0..9, "position": index into POSITIONS}, a second property for captions to name.

    The digit's 8×8 box fills the named half and is centred along the other axis ("left": rows 4-11,
    columns 0-7). Positions are drawn once per split from `seed`, so an item's position is fixed."""

    classes = {"digit": [str(d) for d in range(10)], "position": list(POSITIONS)}

    def __init__(self, split: str, seed: int = 0, heldout_fraction: float = 0.2) -> None:
        self.digits = DigitsDataset(split, seed, heldout_fraction)
        draw = torch.Generator().manual_seed(seed * 7919 + (split == "heldout"))
        self.positions = torch.randint(0, len(POSITIONS), (len(self.digits),), generator=draw)

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, i: int) -> dict:
        digit = self.digits[i]
        position = int(self.positions[i])
        row, column = placed_corner(POSITIONS[position])
        canvas = torch.zeros(1, PLACED_SIZE, PLACED_SIZE)
        canvas[:, row : row + 8, column : column + 8] = digit["media"]
        return {"media": canvas, "labels": {**digit["labels"], "position": position}}


def placed_corner(position: str) -> tuple[int, int]:
    """The (row, column) of the top-left cell of a digit's 8×8 box at `position` on the 16×16 canvas."""
    middle = (PLACED_SIZE - 8) // 2
    return {"left": (middle, 0), "right": (middle, 8), "top": (0, middle), "bottom": (8, middle)}[position]
