"""Images as a stream of patch tokens: pixels in [0, 1] <-> non-overlapping p×p patches in [-1, 1], ViT / DiT
style, with each patch's (row, column) as its position."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import Tokens
from modalities.common.digits import DigitsDataset
from modalities.common.grids import to_pil
from modalities.common.image_files import read_image
from modalities.common.judges import ClassifierJudge, frechet_distance
from modalities.common.patches import PatchAdapter, patchify, unpatchify
from modalities.common.splits import SPLITS, matching_subset
from modalities.image.datasets import ImageFolder


class ImageAdapter(PatchAdapter):
    """Images [B, C, H, W] in [0, 1] as tokens x [B, (H/p)(W/p), p*p*C] in [-1, 1], pos (h, w) in patches.

    `size` = (H, W) is the default sampling size and fixes the extent of a sin-cos position table; folder
    datasets are resized to it.
    """

    name = "image"
    file_suffix = ".png"

    def __init__(
        self,
        channels: int = 3,
        patch_size: int = 2,
        size: tuple[int, int] | list[int] = (32, 32),
        positions: str = "rope",
    ) -> None:
        super().__init__(channels, patch_size, size, positions)

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Images [B, C, H, W] in [0, 1] -> Tokens(x [B, N, p*p*C] in [-1, 1], pos [B, N, 2], mask).
        Images are never padded, so `numbers` is unused."""
        if media.ndim != 4 or media.shape[1] != self.channels:
            raise ValueError(f"images must be [B, C={self.channels}, H, W], got {tuple(media.shape)}")
        x, pos = patchify(media * 2 - 1, self.patch_size)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens -> images [B, C, H, W] in [0, 1] (clamped: a sampler's output may overshoot)."""
        images = unpatchify(tokens.x, tokens.pos, self.patch_size, self.channels)
        return ((images + 1) / 2).clamp(0, 1)

    def load(self, path: str | Path) -> Tensor:
        """An image file -> float [C, H, W] in [0, 1], converted to this adapter's channel count."""
        return read_image(path, self.channels)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, H, W] in [0, 1] -> an 8-bit PNG at `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(item).save(path, format="PNG")
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str) -> Dataset:
        """Source "digits" (scikit-learn's 8×8 digits, needs channels=1, size=(8, 8)) or {"folder": PATH}
        (resized to `size`); split "train" or "heldout"."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if source == "digits":
            if (self.channels, self.size) != (1, (8, 8)):
                raise ValueError(
                    "the digits dataset is 1×8×8; set channels: 1 and size: [8, 8] "
                    f"(got channels: {self.channels}, size: {list(self.size)})"
                )
            return DigitsDataset(split)
        if isinstance(source, Mapping) and set(source) == {"folder"}:
            return ImageFolder(source["folder"], split, size=self.size, channels=self.channels)
        raise KeyError(f"unknown image dataset {source!r}; valid sources: 'digits', {{'folder': PATH}}")

    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """Judge generated images [B, C, H, W] asked for with `labels` ([B] per label name).

        A classifier trained on the real train split gives "accuracy" (does the image show the requested
        class?) and, from its last hidden layer, "frechet_distance" to the held-out split. The reference row
        scores held-out images and a train subset with held-out's class counts, so both rows use equally many
        samples when B equals the held-out size (the Fréchet distance grows as samples shrink)."""
        classes = getattr(train, "classes", {})
        if not classes:
            raise ValueError("evaluate needs a labelled dataset (classes per sub-folder); this one has none")
        key = next(iter(classes))
        if key not in labels:
            raise KeyError(f"evaluate needs the requested {key!r} labels; got {sorted(labels)}")
        train_x, train_y = self._features_and_labels(train, key)
        heldout_x, heldout_y = self._features_and_labels(heldout, key)
        judge = ClassifierJudge(train_x, train_y)
        generated_x = self._features(generated)
        reference_x = train_x[matching_subset(train_y, heldout_y, seed=0)]
        heldout_features = judge.embed(heldout_x)
        return {
            "generated": {
                "accuracy": judge.accuracy(generated_x, labels[key].cpu().numpy()),
                "frechet_distance": frechet_distance(judge.embed(generated_x), heldout_features),
                "samples": len(generated),
            },
            "reference": {
                "accuracy": judge.accuracy(heldout_x, heldout_y),
                "frechet_distance": frechet_distance(judge.embed(reference_x), heldout_features),
                "samples": len(heldout),
            },
        }

    def _features(self, images: Tensor) -> np.ndarray:
        """images [B, C, H, W] -> flattened pixels [B, C*H*W] at the adapter's size (the judge's input)."""
        images = images.detach().float().cpu()
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", antialias=True).clamp(0, 1)
        return rearrange(images, "b c h w -> b (c h w)").numpy()

    def _features_and_labels(self, data: Dataset, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Every item of `data` -> features [N, C*H*W] and labels [N]; item by item, as sizes may differ."""
        items = [data[i] for i in range(len(data))]
        images = [self._features(item["media"][None])[0] for item in items]
        return np.stack(images), np.array([item["labels"][key] for item in items])
