"""A codec as one `.safetensors` file: the codec's weights, and in the metadata its kind, its config and the
latent normalisation the diffusion model sees, (z − shift) · scale (as SD3's shift and scaling factors; one
scalar of each, or one per latent channel). Loading reads tensors and JSON only: it never runs code from the
file. `load_codec` also loads a local diffusers autoencoder folder (mmdit.codecs.diffusers_codec)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from mmdit.codecs.diffusers_codec import load_diffusers_codec
from mmdit.codecs.kinds import DEFAULT_KIND, codec_kind, kind_of
from mmdit.codecs.loaded import LoadedCodec
from mmdit.weights_files import read_safetensors

CODEC = "mmdit-codec"
LEGACY_CODEC = "conv-autoencoder"  # exports written before codec kinds: a ConvAutoencoder, scalar scale


def save_codec(
    path: str | Path,
    model: nn.Module,
    *,
    scale: float | Sequence[float],
    shift: float | Sequence[float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `model`'s state dict and its metadata (kind, config, scale, shift, a JSON-able `extra`) to
    `path`. scale and shift: floats, or one per latent channel."""
    latent_channels = model.config.latent_channels
    for name, value in (("scale", scale), ("shift", shift)):
        values = [value] if isinstance(value, int | float) else list(value)
        if len(values) not in (1, latent_channels) or not all(math.isfinite(v) for v in values):
            raise ValueError(
                f"{name} must be finite, one float or {latent_channels} (one per latent channel), "
                f"got {value!r}"
            )
        if name == "scale" and 0 in values:
            raise ValueError(f"scale must be non-zero, got {scale!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "codec": CODEC,
        "kind": kind_of(model.config).name,
        "config": json.dumps(model.config.to_dict()),
        "scale": _stored(scale),
        "shift": _stored(shift),
        "extra": json.dumps(extra or {}),
    }
    save_file(tensors, path, metadata=metadata)
    return path


def load_codec(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedCodec:
    """The codec at `path`, its weights on `map_location`: a file written by `save_codec` (of any
    registered kind, or a conv export from before kinds), or a directory holding a diffusers
    `AutoencoderKL` or `AutoencoderOobleck` (config.json and its weights), loaded from disk only."""
    path = Path(path)
    if path.is_dir():
        return load_diffusers_codec(path, map_location)
    if not path.is_file():
        raise FileNotFoundError(f"codec file {path} does not exist or is not a file")
    tensors, metadata = read_safetensors(path, what="codec file")
    if metadata.get("codec") not in (CODEC, LEGACY_CODEC):
        raise ValueError(
            f"{path}: no {CODEC!r} codec in its metadata (found codec={metadata.get('codec')!r}); "
            "was it written by save_codec?"
        )
    name = metadata.get("kind", DEFAULT_KIND) if metadata["codec"] == CODEC else DEFAULT_KIND
    try:
        kind = codec_kind(name)
    except KeyError as error:
        raise ValueError(f"{path}: {error.args[0]}") from None
    try:
        config = kind.config.from_dict(json.loads(metadata["config"]))
        scale, shift = _normalisation(metadata["scale"]), _normalisation(metadata["shift"])
        extra = json.loads(metadata["extra"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: malformed codec metadata: {error}") from error
    model = kind.model(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not match the codec's config: {error}") from error
    model.to(map_location).eval().requires_grad_(False)
    return LoadedCodec(model=model, config=config, scale=scale, shift=shift, extra=extra)


def _stored(value: float | Sequence[float]) -> str:
    """A scale or shift as metadata text: JSON writes a float's repr, which round-trips it exactly."""
    return json.dumps(value if isinstance(value, int | float) else [float(v) for v in value])


def _normalisation(text: str) -> float | list[float]:
    """A stored scale or shift: a float (repr or JSON), or a JSON list of floats, one per latent channel."""
    value = json.loads(text)
    if isinstance(value, list):
        return [float(v) for v in value]
    return float(value)
