"""A codec as one `.safetensors` file: the autoencoder's weights, and in the metadata its config and the
latent normalisation the diffusion model sees, (z − shift) · scale (as SD3's shift and scaling factors).
Loading reads tensors and JSON only: it never runs code from the file. `load_codec` also loads a local
diffusers autoencoder folder (mmdit.codecs.diffusers_codec)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mmdit.codecs.autoencoder import AutoencoderConfig, ConvAutoencoder
from mmdit.codecs.diffusers_codec import load_diffusers_codec
from mmdit.codecs.loaded import LoadedCodec
from mmdit.weights_files import read_safetensors

CODEC = "conv-autoencoder"


def save_codec(
    path: str | Path,
    model: ConvAutoencoder,
    *,
    scale: float,
    shift: float,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model`'s state dict and its metadata (config, scale, shift, a JSON-able `extra`) to `path`."""
    if not (math.isfinite(scale) and math.isfinite(shift) and scale != 0):
        raise ValueError(f"scale must be finite and non-zero and shift finite, got {scale!r}, {shift!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "codec": CODEC,
        "config": json.dumps(model.config.to_dict()),
        # repr round-trips a float exactly.
        "scale": repr(float(scale)),
        "shift": repr(float(shift)),
        "extra": json.dumps(extra or {}),
    }
    save_file(tensors, path, metadata=metadata)
    return path


def load_codec(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCodec:
    """The codec at `path`, its weights on `map_location`: a file written by `save_codec`, or a directory
    holding a diffusers `AutoencoderKL` or `AutoencoderOobleck` (config.json and its weights), loaded from
    disk only."""
    path = Path(path)
    if path.is_dir():
        return load_diffusers_codec(path, map_location)
    if not path.is_file():
        raise FileNotFoundError(f"codec file {path} does not exist or is not a file")
    tensors, metadata = read_safetensors(path, what="codec file")
    if metadata.get("codec") != CODEC:
        raise ValueError(
            f"{path}: no {CODEC!r} codec in its metadata (found codec={metadata.get('codec')!r}); "
            "was it written by save_codec?"
        )
    try:
        config = AutoencoderConfig.from_dict(json.loads(metadata["config"]))
        scale, shift = float(metadata["scale"]), float(metadata["shift"])
        extra = json.loads(metadata["extra"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: malformed codec metadata: {error}") from error
    model = ConvAutoencoder(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not match the codec's config: {error}") from error
    model.to(map_location).eval().requires_grad_(False)
    return LoadedCodec(model=model, config=config, scale=scale, shift=shift, extra=extra)
