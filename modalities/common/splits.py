"""Train and held-out splits: every dataset splits its items with one fixed-seed permutation, and evaluation
compares generations with a real subset drawn to the same class counts."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "heldout")


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


def matching_subset(pool: np.ndarray, target: np.ndarray, seed: int) -> np.ndarray:
    """Indices into `pool` labels [N] with the same count per class as `target` labels [M], drawn without
    replacement (fixed seed)."""
    rng = np.random.default_rng(seed)
    picks = []
    for label, count in zip(*np.unique(target, return_counts=True), strict=True):
        candidates = np.flatnonzero(pool == label)
        picks.append(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    return np.concatenate(picks)
