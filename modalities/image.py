"""Images as a stream of patch tokens: pixels in [0, 1] <-> non-overlapping p×p patches in [-1, 1], ViT / DiT
style, with each patch's (row, column) as its position."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.metrics import ClassifierJudge, frechet_distance
from mmdit.model.backbone import StreamSpec
from mmdit.model.tokens import Tokens
from modalities.base import ModalityAdapter
from modalities.image_datasets import SPLITS, DigitsDataset, ImageFolder, pil_mode, read_image

POSITIONS = ("rope", "sincos")
PREVIEW_CELL = 64  # smallest preview cell in pixels, so 8×8 digits are visible
PREVIEW_PADDING = 2


def grid_positions(height: int, width: int, batch_size: int, device: torch.device | None = None) -> Tensor:
    """(h, w) coordinates of a height×width patch grid in row-major order: float [B, height*width, 2]."""
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    pos = rearrange(torch.stack([rows, cols], dim=-1), "h w a -> (h w) a").float()
    return pos.expand(batch_size, -1, -1).clone()


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


class ImageAdapter(ModalityAdapter):
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
        if positions not in POSITIONS:
            raise ValueError(f"image positions must be one of {POSITIONS}, got {positions!r}")
        self.channels, self.patch_size, self.positions = channels, patch_size, positions
        self.size = self._check_size(size)

    def _check_size(self, size: Sequence[int]) -> tuple[int, int]:
        if len(size) != 2 or size[0] % self.patch_size or size[1] % self.patch_size:
            raise ValueError(
                f"image size {tuple(size)} must be (H, W) divisible by patch size {self.patch_size}"
            )
        return int(size[0]), int(size[1])

    def stream(self, name: str) -> StreamSpec:
        p = self.patch_size
        grid = (self.size[0] // p, self.size[1] // p) if self.positions == "sincos" else None
        return StreamSpec(name, features=self.channels * p * p, positions=self.positions, axes=2, grid=grid)

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

    def layout(
        self,
        batch_size: int,
        numbers: Mapping[str, Tensor] | None = None,
        size: Sequence[int] | None = None,
    ) -> Tokens:
        """Zeros x [B, N, p*p*C], positions and an all-True mask for images of `size` = (H, W) (default
        the adapter's); `numbers` is unused."""
        h, w = self.size if size is None else self._check_size(size)
        p = self.patch_size
        pos = grid_positions(h // p, w // p, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.channels * p * p)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))

    def load(self, path: str | Path) -> Tensor:
        """An image file -> float [C, H, W] in [0, 1], converted to this adapter's channel count."""
        return read_image(path, self.channels)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, H, W] in [0, 1] -> an 8-bit PNG at `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(item).save(path, format="PNG")
        return path

    def preview(self, media: Tensor, path: str | Path) -> Path:
        """media [B, C, H, W] in [0, 1] -> a PNG grid of ceil(sqrt(B)) columns; cells are upscaled
        (nearest) to at least 64 px."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(grid_image(media.detach().float().cpu())).save(path, format="PNG")
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


def matching_subset(pool: np.ndarray, target: np.ndarray, seed: int) -> np.ndarray:
    """Indices into `pool` labels [N] with the same count per class as `target` labels [M], drawn without
    replacement (fixed seed)."""
    rng = np.random.default_rng(seed)
    picks = []
    for label, count in zip(*np.unique(target, return_counts=True), strict=True):
        candidates = np.flatnonzero(pool == label)
        picks.append(rng.choice(candidates, size=min(count, len(candidates)), replace=False))
    return np.concatenate(picks)


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
