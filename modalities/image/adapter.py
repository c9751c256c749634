"""Images as a stream of patch tokens: pixels in [0, 1] <-> non-overlapping p×p patches in [-1, 1], ViT / DiT
style, with each patch's (row, column) as its position; or, with a codec, p×p patches of the codec's
normalised latents, as SD3 and DiT diffuse images (`mmdit.codecs.FrozenCodec`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.codecs import FrozenCodec
from mmdit.contract import Tokens
from modalities.common.digits import DigitsDataset, PlacedDigitsDataset
from modalities.common.folders import folder_source
from modalities.common.gridded import GridAdapter
from modalities.common.grids import to_pil
from modalities.common.image_files import IMAGE_SUFFIXES, read_image
from modalities.common.judges import ClassifierJudge, frechet_distance
from modalities.common.patches import patchify, unpatchify
from modalities.common.splits import SPLITS, matching_subset
from modalities.image.datasets import ImageFolder

BUNDLED = {"digits": (DigitsDataset, 8), "placed-digits": (PlacedDigitsDataset, 16)}
"""The bundled image datasets: name -> (class, side of its 1-channel square images)."""


class ImageAdapter(GridAdapter):
    """Images [B, C, H, W] in [0, 1] as tokens x [B, (H/p)(W/p), p*p*C] in [-1, 1], pos (h, w) in patches.

    `size` = (H, W) is the default sampling size and fixes the extent of a sin-cos position table; folder
    datasets are resized to it.

    `codec` = PATH (a 2-D codec export, codec.safetensors, or a local diffusers `AutoencoderKL` folder, of
    `channels` channels): images are diffused in its learned latent, as SD3 / DiT do. Pixels in [0, 1] ->
    [-1, 1] -> the encoder's posterior mode z [B, D, H/f, W/f] (D latent channels, f its downsampling) ->
    (z - shift) · scale -> tokens x [B, (H/f/p)(W/f/p), p*p*D], pos (h, w) in latent patches; `decode` runs
    the codec's decoder and maps its output to [0, 1], clamped. `size` stays in pixels and must be divisible
    by f·p; `channels` (the attribute channel-fastest guidance reads) becomes D, and `image_channels` keeps
    C. Files, previews, datasets and evaluation stay in pixels; `encoding_identity` is the codec's digest.
    """

    name = "image"
    file_suffix = ".png"
    read_suffixes = IMAGE_SUFFIXES

    def __init__(
        self,
        channels: int = 3,
        patch_size: int = 2,
        size: tuple[int, int] | list[int] = (32, 32),
        positions: str = "rope",
        codec: str | None = None,
    ) -> None:
        if len(size) != 2:
            raise ValueError(f"image size {tuple(size)} must be (H, W)")
        # C, the channels of the images (files, datasets, `encode`'s input, `decode`'s output); the frozen
        # codec whose normalised latents the tokens carry, or None (pixels); f, pixels per latent cell.
        self.image_channels = channels
        hint = "an image codec's export or a diffusers AutoencoderKL folder"
        self.codec = None if codec is None else FrozenCodec(codec, 2, channels, "images", hint)
        self.downsampling = 1 if self.codec is None else self.codec.downsampling
        super().__init__(
            channels if self.codec is None else self.codec.latent_channels, patch_size, size, positions
        )

    def _check_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """A size (H, W) in pixels, checked: divisible by the patch, times the codec's downsampling."""
        if self.codec is None:
            return super()._check_size(size)
        f = self.downsampling
        if len(size) != 2 or any(n % (f * p) for n, p in zip(size, self.patch, strict=True)):
            raise ValueError(
                f"image size {tuple(size)} must be (H, W) divisible by the codec's downsampling {f} × "
                f"patch_size {self.patch_size} = {tuple(f * p for p in self.patch)} (codec {self.codec.path})"
            )
        return tuple(int(n) for n in size)

    def token_grid(self, extent: Sequence[int]) -> list[int]:
        """Patches per axis of an image of `extent` pixels: extent / (f·p)."""
        return [n // (self.downsampling * p) for n, p in zip(extent, self.patch, strict=True)]

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Images [B, C, H, W] in [0, 1] -> Tokens(x [B, N, F], pos [B, N, 2], mask all True): F = p*p*C
        values in [-1, 1], or with a codec p*p*D normalised latents (N = (H/f/p)(W/f/p), computed without
        gradients on the images' device). Images are never padded, so `numbers` is unused."""
        if self.codec is None:
            return super().encode(media, numbers)
        if media.ndim != 4 or media.shape[1] != self.image_channels:
            raise ValueError(f"images must be [B, C={self.image_channels}, H, W], got {tuple(media.shape)}")
        step = [self.downsampling * p for p in self.patch]
        if any(n % k for n, k in zip(media.shape[2:], step, strict=True)):
            raise ValueError(
                f"images {tuple(media.shape)}: H, W must be divisible by the codec's downsampling "
                f"{self.downsampling} × patch_size {self.patch_size} = {tuple(step)}"
            )
        x, pos = patchify(self.codec.encode(self.to_values(media)), self.patch)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens in `encode`'s order -> images [B, C, H, W] in [0, 1] (extent from the positions; with a
        codec, the decoder's output of the un-normalised latents, H = f·p·rows), on the tokens' device."""
        if self.codec is None:
            return super().decode(tokens)
        latents = unpatchify(tokens.x, tokens.pos, self.patch, self.channels)
        return self.from_values(self.codec.decode(latents))

    def encoding_identity(self) -> dict[str, Any]:
        """{"codec": sha256 of the codec file or folder} with a codec (tokens cached under another codec are
        stale); {} without."""
        return {} if self.codec is None else {"codec": self.codec.digest}

    def to_values(self, media: Tensor) -> Tensor:
        return media * 2 - 1

    def from_values(self, values: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], clamped (a sampler's output may overshoot)."""
        return ((values + 1) / 2).clamp(0, 1)

    def codec_values(self, media: Tensor) -> Tensor:
        """[0, 1] pixels -> [-1, 1], what `encode` feeds its codec (and diffusers' image VAEs expect), so a
        codec stage trains an image codec on the values it will later encode."""
        return self.to_values(media)

    def codec_media(self, values: Tensor) -> Tensor:
        """[-1, 1] -> [0, 1], unclamped (a codec stage's loss needs its gradient everywhere)."""
        return (values + 1) / 2

    def preview_values(self, media: Tensor) -> Tensor:
        return media

    def load(self, path: str | Path) -> Tensor:
        """An image file -> float [C, H, W] in [0, 1], converted to this adapter's channel count."""
        return read_image(path, self.image_channels)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, H, W] in [0, 1] -> an 8-bit PNG at `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(item).save(path, format="PNG")
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """Source "digits" (scikit-learn's 8×8 digits, needs channels=1, size=(8, 8)), "placed-digits" (those
        digits at one of four positions on a 16×16 canvas, labels digit and position; size=(16, 16)) or
        {"folder": PATH, "label": NAME} (resized to `size`); split "train" or "heldout"; `seed` draws the
        split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(source, str) and source in BUNDLED:
            dataset, side = BUNDLED[source]
            if (self.image_channels, self.size) != (1, (side, side)):
                raise ValueError(
                    f"the {source} dataset is 1×{side}×{side}; set channels: 1 and size: [{side}, {side}] "
                    f"(got channels: {self.image_channels}, size: {list(self.size)})"
                )
            return dataset(split, seed)
        folder = folder_source(source, "image", bundled=list(BUNDLED))
        return ImageFolder(folder.path, split, self.size, self.image_channels, seed=seed, label=folder.label)

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
        key, *others = classes
        if key not in labels:
            raise KeyError(f"evaluate needs the requested {key!r} labels; got {sorted(labels)}")
        train_x, train_y = self._features_and_labels(train)
        heldout_x, heldout_y = self._features_and_labels(heldout)
        judge = ClassifierJudge(train_x, train_y[key])
        generated_x = self._features(generated)
        reference_x = train_x[matching_subset(train_y[key], heldout_y[key], seed=0)]
        heldout_features = judge.embed(heldout_x)
        report = {
            "generated": {
                "accuracy": judge.accuracy(generated_x, labels[key].cpu().numpy()),
                "frechet_distance": frechet_distance(judge.embed(generated_x), heldout_features),
                "samples": len(generated),
            },
            "reference": {
                "accuracy": judge.accuracy(heldout_x, heldout_y[key]),
                "frechet_distance": frechet_distance(judge.embed(reference_x), heldout_features),
                "samples": len(heldout),
            },
        }
        # Every further label (a placed digit's position) gets a judge of its own.
        for other in (k for k in others if k in labels):
            judge = ClassifierJudge(train_x, train_y[other])
            report["generated"][f"accuracy_{other}"] = judge.accuracy(
                generated_x, labels[other].cpu().numpy()
            )
            report["reference"][f"accuracy_{other}"] = judge.accuracy(heldout_x, heldout_y[other])
        return report

    def _features(self, images: Tensor) -> np.ndarray:
        """images [B, C, H, W] -> flattened pixels [B, C*H*W] at the adapter's size (the judge's input)."""
        images = images.detach().float().cpu()
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", antialias=True).clamp(0, 1)
        return rearrange(images, "b c h w -> b (c h w)").numpy()

    def _features_and_labels(self, data: Dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Every item of `data` -> features [N, C*H*W] and {label: [N]}; item by item, as sizes may
        differ."""
        items = [data[i] for i in range(len(data))]
        images = [self._features(item["media"][None])[0] for item in items]
        keys = items[0]["labels"]
        return np.stack(images), {k: np.array([item["labels"][k] for item in items]) for k in keys}
