"""scikit-learn's bundled 8×8 handwritten digits (no download): the image recipes' dataset, and the source of
the moving-digits clips and of the digit judges."""

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
