"""Autoencoder latents [C, H, W] as patch tokens, unscaled: the stream DiT and SD3 checkpoints work in.

mmdit ships no autoencoder (nothing is downloaded), so latents come and go as files: `.safetensors` holding
one tensor "latent" [C, H, W] (already multiplied by the autoencoder's scaling factor, e.g. 0.18215 for SD's
VAE, as DiT trains on them). A user decodes samples with their own autoencoder.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from modalities.common.gridded import GridAdapter

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


class LatentAdapter(GridAdapter):
    """Latents [B, C, H, W] (any real values) <-> tokens [B, (H/p)(W/p), p*p*C], positions (h, w); datasets
    are `{"folder": PATH, "label": NAME}` of latent files (sub-folders name classes)."""

    name = "latent"
    file_suffix = ".safetensors"

    def __init__(
        self,
        channels: int = 4,
        patch_size: int = 2,
        size: tuple[int, int] | list[int] = (32, 32),
        positions: str = "sincos",
    ) -> None:
        if len(size) != 2:
            raise ValueError(f"latent size {tuple(size)} must be (H, W)")
        super().__init__(channels, patch_size, size, positions)

    def load(self, path: str | Path) -> Tensor:
        return read_latent(path, self.channels)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, H, W] -> a .safetensors file with the tensor "latent"."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({LATENT_KEY: item.detach().float().cpu().contiguous()}, path)
        return path

    def evaluate(self, generated, labels, train, heldout):
        raise ValueError(
            "latents are judged after decoding by their autoencoder, which mmdit does not ship: decode the "
            "samples of `mmdit sample` with your autoencoder and score the images"
        )
