"""Autoencoder latents [C, H, W] as patch tokens, unscaled: the stream DiT and SD3 checkpoints work in.

mmdit ships no autoencoder (nothing is downloaded), so latents come and go as files: `.safetensors` holding
one tensor "latent" [C, H, W] (already multiplied by the autoencoder's scaling factor, e.g. 0.18215 for SD's
VAE, as DiT trains on them). A user decodes samples with their own autoencoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import Tokens
from modalities.common.folders import MediaFolder
from modalities.common.patches import PatchAdapter, patchify, unpatchify
from modalities.common.splits import SPLITS

LATENT_KEY = "latent"


def read_latent(path: str | Path, channels: int) -> Tensor:
    """A latent file -> float [channels, H, W]; a file that is not one is an error naming it."""
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read latent {path}: {err}") from err
    if LATENT_KEY not in tensors:
        raise ValueError(f"{path} has no tensor {LATENT_KEY!r} (it has {sorted(tensors)})")
    latent = tensors[LATENT_KEY].float()
    if latent.ndim != 3 or latent.shape[0] != channels:
        raise ValueError(f"{path}: latent of shape {tuple(latent.shape)}, expected [{channels}, H, W]")
    return latent


class LatentAdapter(PatchAdapter):
    """Latents [B, C, H, W] (any real values) <-> tokens [B, (H/p)(W/p), p*p*C], positions (h, w)."""

    name = "latent"
    file_suffix = ".safetensors"

    def __init__(
        self,
        channels: int = 4,
        patch_size: int = 2,
        size: tuple[int, int] | list[int] = (32, 32),
        positions: str = "sincos",
    ) -> None:
        super().__init__(channels, patch_size, size, positions)

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        if media.ndim != 4 or media.shape[1] != self.channels:
            raise ValueError(f"latents must be [B, C={self.channels}, H, W], got {tuple(media.shape)}")
        x, pos = patchify(media, self.patch_size)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        return unpatchify(tokens.x, tokens.pos, self.patch_size, self.channels)

    def load(self, path: str | Path) -> Tensor:
        return read_latent(path, self.channels)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, H, W] -> a .safetensors file with the tensor "latent"."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({LATENT_KEY: item.detach().float().cpu().contiguous()}, path)
        return path

    def preview(self, media: Tensor, path: str | Path) -> Path:
        """Each latent's first three channels as RGB, each channel min-max normalised over the batch."""
        media = media.detach().float().cpu()
        shown = media[:, :3] if media.shape[1] >= 3 else media[:, :1]
        low = shown.amin(dim=(0, 2, 3), keepdim=True)
        high = shown.amax(dim=(0, 2, 3), keepdim=True)
        return super().preview((shown - low) / (high - low).clamp_min(1e-8), path)

    def dataset(self, source: str | Mapping[str, Any], split: str) -> Dataset:
        """{"folder": PATH} of latent .safetensors files (sub-folders name classes)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if isinstance(source, Mapping) and set(source) == {"folder"}:
            return MediaFolder(
                source["folder"], split, (".safetensors",), lambda p: read_latent(p, self.channels), "latent"
            )
        raise KeyError(f"unknown latent dataset {source!r}; valid sources: {{'folder': PATH}}")

    def evaluate(self, generated, labels, train, heldout):
        raise ValueError(
            "latents are judged after decoding by their autoencoder, which mmdit does not ship: decode the "
            "samples of `mmdit sample` with your autoencoder and score the images"
        )
