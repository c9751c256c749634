"""`GridAdapter`: the base of every gridded modality (1-D series, 2-D images and spectra, 3-D volumes). It
does what does not depend on what the values mean: patch tokens and their positions, the stream, layouts of
any size, previews and folder datasets. A new gridded modality adds its file format (`load` / `save`), its
bundled data if any, and its judge (`evaluate`); `to_values` / `from_values` map media to token values
when they differ (images: [0, 1] pixels <-> [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import ModalityAdapter, StreamSpec, Tokens
from modalities.common.folders import MediaFolder, folder_source
from modalities.common.grids import grid_image, to_pil
from modalities.common.patches import grid_positions, patchify, unpatchify
from modalities.common.splits import SPLITS

POSITIONS = ("rope", "sincos")


class GridAdapter(ModalityAdapter):
    """Media [B, C, *size] as tokens x [B, N, prod(patch)*C], pos [B, N, ndim] (the patch index per axis),
    mask all True; N = prod(size / patch).

    channels:   C, values per grid cell.
    patch_size: cells per patch along each axis (one int for all axes).
    size:       the default extent per axis (a sampling size; fixes a sin-cos table's extent).
    positions:  "rope" over ndim axes, or "sincos" (DiT's fixed table; 2-D grids only).
    """

    bundled: ClassVar[tuple[str, ...]] = ()
    """Names of the bundled datasets a subclass's `dataset` serves before it calls this one's (for
    errors that list the valid sources)."""

    def __init__(
        self,
        channels: int,
        patch_size: int | Sequence[int],
        size: Sequence[int],
        positions: str = "rope",
    ) -> None:
        if positions not in POSITIONS:
            raise ValueError(f"{self.name} positions must be one of {POSITIONS}, got {positions!r}")
        ndim = len(size)
        patch = (patch_size,) * ndim if isinstance(patch_size, int) else tuple(patch_size)
        if len(patch) != ndim:
            raise ValueError(f"{self.name} patch_size {patch_size} must give one size per axis of {size}")
        if positions == "sincos" and ndim != 2:
            raise ValueError(f"{self.name}: sincos positions need a 2-D grid, got size {tuple(size)}")
        self.channels, self.patch_size, self.patch, self.positions = channels, patch_size, patch, positions
        self.size = self._check_size(size)

    def _check_size(self, size: Sequence[int]) -> tuple[int, ...]:
        if len(size) != len(self.patch) or any(n % p for n, p in zip(size, self.patch, strict=True)):
            raise ValueError(
                f"{self.name} size {tuple(size)} must have {len(self.patch)} axes divisible by the patch "
                f"{self.patch}"
            )
        return tuple(int(n) for n in size)

    def item(self, path: str | Path) -> dict[str, Any]:
        """A file of this adapter's `size` as an item; another extent is an error naming the file and both
        shapes (a fixed-size model is not resized behind the user's back)."""
        media = self.load(path)
        if tuple(media.shape[1:]) != self.size:
            raise ValueError(
                f"{path}: {self.name} of shape {list(media.shape)}; this model reads "
                f"{[media.shape[0], *self.size]} (resize the file to {list(self.size)})"
            )
        return {"media": media, "numbers": {}}

    def to_values(self, media: Tensor) -> Tensor:
        """Media -> the values tokens carry (default: the media itself)."""
        return media

    def from_values(self, values: Tensor) -> Tensor:
        """Inverse of `to_values` (a subclass may clamp here: samplers overshoot)."""
        return values

    def token_grid(self, extent: Sequence[int]) -> list[int]:
        """Tokens per axis of an item of `extent` cells: extent / patch (a codec's adapter divides by its
        downsampling too)."""
        return [n // p for n, p in zip(extent, self.patch, strict=True)]

    def stream(self, name: str) -> StreamSpec:
        grid = tuple(self.token_grid(self.size))
        return StreamSpec(
            name,
            features=self.channels * math.prod(self.patch),
            positions=self.positions,
            axes=len(self.patch),
            grid=grid if self.positions == "sincos" else None,
        )

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """media [B, C, *extent] -> Tokens; grids are never padded, so `numbers` is unused."""
        if media.ndim != 2 + len(self.patch) or media.shape[1] != self.channels:
            raise ValueError(
                f"{self.name} media must be [B, C={self.channels}, then {len(self.patch)} axes], got "
                f"{tuple(media.shape)}"
            )
        x, pos = patchify(self.to_values(media), self.patch)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens in `encode`'s order -> media [B, C, *extent] (extent read from the positions)."""
        return self.from_values(unpatchify(tokens.x, tokens.pos, self.patch, self.channels))

    def layout(
        self,
        batch_size: int,
        numbers: Mapping[str, Tensor] | None = None,
        size: Sequence[int] | None = None,
    ) -> Tokens:
        """Zeros, positions and an all-True mask for `batch_size` items of `size` (default the adapter's;
        `mmdit sample --layout size=H,W` asks for another)."""
        extent = self.size if size is None else self._check_size(size)
        pos = grid_positions(self.token_grid(extent), batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.channels * math.prod(self.patch))
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))

    def preview_values(self, media: Tensor) -> Tensor:
        """Media -> [B, C', *extent] in [0, 1] for a preview: the first three channels (or the first), each
        min-max normalised over the batch. Subclasses whose media already lie in [0, 1] return them."""
        shown = media[:, :3] if media.shape[1] >= 3 else media[:, :1]
        axes = [0, *range(2, shown.ndim)]
        low, high = shown.amin(dim=axes, keepdim=True), shown.amax(dim=axes, keepdim=True)
        return (shown - low) / (high - low).clamp_min(1e-8)

    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """media [B, C, *extent] -> a PNG grid of `columns` columns (default ceil(sqrt(B))): 1-D items as
        line plots, 2-D items as pictures, 3-D items as their middle slice along the first axis."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        media = media.detach().float().cpu()
        if media.ndim == 3:
            return _plot_series(media, path, columns)
        shown = self.preview_values(media)
        if shown.ndim == 5:
            shown = shown[:, :, shown.shape[2] // 2]
        to_pil(grid_image(shown, columns)).save(path, format="PNG")
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """`{"folder": PATH, "label": NAME}` (label optional): this modality's files under PATH, read by
        `load`, sub-folders naming the classes of label NAME ("class"). Subclasses add bundled sources and
        call this for folders."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        folder = folder_source(source, self.name, self.bundled)
        return MediaFolder(
            folder.path, split, (self.file_suffix,), self.load, self.name, seed=seed, label=folder.label
        )


def _plot_series(media: Tensor, path: Path, columns: int | None) -> Path:
    """media [B, C, L] -> small multiples, one panel per item (channels overlaid), shared y range."""
    count = len(media)
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(1.4 * cols, 0.9 * rows), dpi=100)
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < count:
            ax.plot(media[i].T.numpy(), lw=0.8)
    figure.subplots_adjust(0.01, 0.01, 0.99, 0.99, 0.05, 0.1)
    figure.savefig(path, format="png")
    return path
