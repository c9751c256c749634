"""Our DiT of a preset size on DiT's 256 px latents, as the benchmarks that time it build it."""

from __future__ import annotations

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.presets import preset

CHANNELS, SIDE, CLASSES = 4, 32, 1000
"""Latent channels and side (Stable Diffusion's VAE at 256 px), ImageNet's classes."""


def latent_dit(size: str, compile: bool = False) -> tuple[MMDiT, int]:
    """(model, patch size) of preset `size` ("DiT-S/2" …) over [B, 4, 32, 32] latents patchified into
    [B, (32 / p)², 4·p²] tokens, with learned sigma (2× the features out) and 1000 classes."""
    sizes = preset(size)
    patch = sizes.pop("patch_size")
    features, grid = CHANNELS * patch * patch, SIDE // patch
    spec = StreamSpec("image", features, 2 * features, "sincos", 2, (grid, grid))
    return MMDiT([spec], qk_norm=False, labels={"class": CLASSES}, compile=compile, **sizes), patch
