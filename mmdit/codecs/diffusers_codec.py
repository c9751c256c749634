"""A local diffusers autoencoder folder as a codec: `AutoencoderKL` (the SD / SD3 / FLUX image VAEs),
`AutoencoderOobleck` (Stable Audio Open's waveform VAE), or a causal video VAE, `AutoencoderKLWan` (Wan 2.1 /
2.2) or `AutoencoderKLCogVideoX`, wrapped to mmdit's encode -> Posterior / decode contract. Weights come from
disk only: no hub access, ever. diffusers is imported only when such a folder is loaded, so the rest of mmdit
does not need it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmdit.codecs.autoencoder import Posterior
from mmdit.codecs.loaded import CodecShape, LoadedCodec, time_folding

Normalisation = tuple[CodecShape, float | list[float], float | list[float]]


def _kl(config: Mapping[str, Any]) -> Normalisation:
    # Every encoder block but the last halves both image axes.
    downsampling = 2 ** (len(config["block_out_channels"]) - 1)
    shape = CodecShape(2, config["in_channels"], config["latent_channels"], downsampling)
    # SD and SD XL have no shift (None); SD3 and FLUX have one.
    return shape, float(config["scaling_factor"]), float(config["shift_factor"] or 0.0)


def _oobleck(config: Mapping[str, Any]) -> Normalisation:
    downsampling = math.prod(config["downsampling_ratios"])
    shape = CodecShape(1, config["audio_channels"], config["decoder_input_channels"], downsampling)
    # Stable Audio Open feeds its DiT the raw latents: no scaling or shift.
    return shape, 1.0, 0.0


WAN_CHUNK = 4


def _wan(config: Mapping[str, Any]) -> Normalisation:
    # The shape follows the layers, not the config's `scale_factor_*` (a model built with other levels keeps
    # their defaults): every level but the last halves space, those flagged in `temperal_downsample` halve
    # time too, and Wan 2.2's `patch_size` folds p × p pixels into the channels first.
    patch = config["patch_size"] or 1
    spatial = patch * 2 ** (len(config["dim_mult"]) - 1)
    temporal = 2 ** sum(bool(flag) for flag in config["temperal_downsample"])
    if temporal != WAN_CHUNK:
        # diffusers encodes Wan clips as the first frame, then chunks of exactly 4 frames: any other time
        # factor would silently drop frames.
        raise ValueError(
            f"a Wan VAE must fold time by {WAN_CHUNK} (diffusers encodes it in {WAN_CHUNK}-frame chunks); "
            f"temperal_downsample {list(config['temperal_downsample'])} folds it by {temporal}"
        )
    shape = CodecShape(3, config["in_channels"] // patch**2, config["z_dim"], spatial, temporal, causal=True)
    # Wan's pipelines normalise each channel by its measured mean and std: (z - mean) / std.
    scale = [1.0 / float(std) for std in config["latents_std"]]
    return shape, scale, [float(mean) for mean in config["latents_mean"]]


def _cogvideox(config: Mapping[str, Any]) -> Normalisation:
    # Every encoder block but the last halves space; the first log2(ratio) of those halve time (odd frame
    # counts keep their first frame apart).
    spatial = 2 ** (len(config["block_out_channels"]) - 1)
    temporal = int(config["temporal_compression_ratio"])
    shape = CodecShape(3, config["in_channels"], config["latent_channels"], spatial, temporal, causal=True)
    # CogVideoX's pipelines multiply by the scaling factor and shift nothing.
    return shape, float(config["scaling_factor"]), float(config["shift_factor"] or 0.0)


SUPPORTED: dict[str, Callable[[Mapping[str, Any]], Normalisation]] = {
    "AutoencoderKL": _kl,
    "AutoencoderOobleck": _oobleck,
    "AutoencoderKLWan": _wan,
    "AutoencoderKLCogVideoX": _cogvideox,
}
"""The supported diffusers classes (config.json's `_class_name`), each with how its config (defaults
filled in by diffusers) gives the codec's shape, scale and shift (one float, or one per latent channel)."""


class DiffusersAutoencoder(nn.Module):
    """A diffusers autoencoder under mmdit's codec contract. Images [B, 3, H, W] in [-1, 1] -> latents
    [B, C, H / f, W / f] (AutoencoderKL); audio [B, channels, S] -> [B, C, S / f] (AutoencoderOobleck);
    clips [B, 3, 1 + k · ft, H, W] in [-1, 1] -> [B, C, 1 + k, H / f, W / f] (the causal video VAEs); f is
    `shape.downsampling`, ft `shape.temporal_downsampling`."""

    def __init__(self, model: nn.Module, shape: CodecShape) -> None:
        super().__init__()
        self.model = model
        self.shape = shape

    def encode(self, x: Tensor) -> Posterior:
        """x [B, channels, *extent] -> q(z | x) with mean, logvar [B, latent_channels, *latent extent]."""
        self._check(x, self.shape.channels, "input")
        space = x.shape[2:] if self.shape.temporal_downsampling is None else x.shape[3:]
        if any(n % self.shape.downsampling for n in space):
            raise ValueError(
                f"input of shape {tuple(x.shape)}: every {'' if len(space) == x.ndim - 2 else 'spatial '}"
                f"extent must be divisible by the downsampling factor {self.shape.downsampling}"
            )
        if self.shape.temporal_downsampling is not None:
            frames = x.shape[2]
            if time_folding(self.shape).padded_frames(frames) != frames:
                ft = self.shape.temporal_downsampling
                raise ValueError(
                    f"clips of shape {tuple(x.shape)}: a causal video VAE takes 1 + k · {ft} frames, got "
                    f"{frames} (pad with the last frame)"
                )
        distribution = self.model.encode(x).latent_dist
        # Both diffusers Gaussians carry logvar: AutoencoderKL's (and the video VAEs') is the encoder's
        # output (clamped as Posterior clamps it); Oobleck's is log(std²), std = softplus(its `scale`) + 1e-4.
        return Posterior(distribution.mean, distribution.logvar)

    def decode(self, z: Tensor) -> Tensor:
        """z [B, latent_channels, *latent_extent] -> x_hat [B, channels, *latent_extent · f]."""
        self._check(z, self.shape.latent_channels, "latent")
        return self.model.decode(z).sample

    def _check(self, x: Tensor, channels: int, what: str) -> None:
        if x.ndim != 2 + self.shape.dims or x.shape[1] != channels:
            raise ValueError(
                f"{what} of shape {tuple(x.shape)}: expected [B, {channels}, ...] with "
                f"{self.shape.dims} spatial axes"
            )


def load_diffusers_codec(folder: str | Path, map_location: str | torch.device = "cpu") -> LoadedCodec:
    """The diffusers autoencoder saved (`save_pretrained`) in `folder`, frozen in eval mode on
    `map_location`, with the latent normalisation its pipelines apply as scale and shift: AutoencoderKL's
    and CogVideoX's scaling and shift factors, Wan's per-channel 1 / std and mean (Oobleck has none: 1
    and 0)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"codec folder {folder} has no config.json (a diffusers autoencoder folder)")
    try:
        name = json.loads(config_file.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a readable diffusers config: {error}") from error
    if name not in SUPPORTED:
        raise ValueError(
            f"codec folder {folder} holds a diffusers {name!r}; supported classes are {sorted(SUPPORTED)}"
        )
    try:
        import diffusers
    except ImportError as error:
        raise ImportError(
            f"codec folder {folder} holds a diffusers {name}, and loading it needs diffusers: "
            "pip install diffusers"
        ) from error
    # float32 whatever the stored dtype (fp16 VAE weights exist): consumers encode float32 media.
    model = getattr(diffusers, name).from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
    shape, scale, shift = SUPPORTED[name](model.config)
    codec = DiffusersAutoencoder(model, shape).to(map_location).eval().requires_grad_(False)
    return LoadedCodec(
        model=codec, config=shape, scale=scale, shift=shift, extra={"diffusers": name, "folder": str(folder)}
    )
