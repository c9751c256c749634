"""Codec kinds: which model a codec stage trains and an export rebuilds, by name. `conv` (the
`ConvAutoencoder`, for any gridded media) is built in; a modality registers its own kinds when imported (the
audio modality's `harmonic`), so the core never imports a modality. `autoencoder.kind` in a recipe picks one;
an export's metadata names its kind.

A kind is a config dataclass (with `dims`, `channels`, `latent_channels`, `downsampling`, `to_dict` and
`from_dict`, as `AutoencoderConfig`), a module built from that config (`encode(x) -> Posterior`,
`decode(z) -> x_hat`, `forward(x, generator) -> Reconstruction`), and how a recipe's `autoencoder` section
and the data make a config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mmdit.codecs.autoencoder import AutoencoderConfig, ConvAutoencoder

DEFAULT_KIND = "conv"


def global_statistics(z: Tensor) -> tuple[float, float]:
    """Latents [N, D, *extent] -> (mean, 1 / std) over every value: unit variance for all channels."""
    return float(z.mean()), float(1.0 / z.std().clamp_min(1e-8))


def channel_statistics(z: Tensor) -> tuple[list[float], list[float]]:
    """Latents [N, D, *extent] -> ([D] means, [D] 1 / stds): each channel zero-mean and unit-variance."""
    per_channel = z.transpose(0, 1).flatten(1)  # [D, N · extent]
    return per_channel.mean(1).tolist(), (1.0 / per_channel.std(1).clamp_min(1e-8)).tolist()


@dataclass(frozen=True)
class CodecKind:
    """name: what recipes and exports call it. config: the config dataclass (`from_dict` reads an export's).
    model: config -> the module. from_recipe: (the recipe's `autoencoder` section, the data's item shape
    [C, *extent], the data stream's adapter) -> a config. statistics: the posterior means of some train
    items [N, D, *extent] -> the export's (shift, scale), so that the diffusion model sees (z - shift) ·
    scale: `global_statistics` (one of each for all channels, SD3's factors) or `channel_statistics` (one
    per channel, for channels of unlike statistics, such as a measured pitch beside learned timbre), or a
    kind's own (the harmonic codec fixes its pitch channel's unit)."""

    name: str
    config: type
    model: Callable[[Any], nn.Module]
    from_recipe: Callable[[Any, tuple[int, ...], Any], Any]
    statistics: Callable[[Tensor], tuple[Any, Any]] = global_statistics


_kinds: dict[str, CodecKind] = {}


def register_codec_kind(kind: CodecKind) -> CodecKind:
    """Make `kind` available by its name (replacing a kind of the same name)."""
    _kinds[kind.name] = kind
    return kind


def codec_kind(name: str) -> CodecKind:
    """The kind called `name`; an unknown name is an error naming it and the registered kinds."""
    if name not in _kinds:
        raise KeyError(
            f"unknown codec kind {name!r}; registered: {', '.join(sorted(_kinds))} (a modality registers "
            "its kinds when it is imported)"
        )
    return _kinds[name]


def kind_of(config: Any) -> CodecKind:
    """The registered kind whose config class `config` is."""
    for kind in _kinds.values():
        if type(config) is kind.config:
            return kind
    raise KeyError(f"no registered codec kind has the config class {type(config).__name__}")


def conv_config(section: Any, item_shape: tuple[int, ...], adapter: Any = None) -> AutoencoderConfig:
    """The `ConvAutoencoder` for media items of `item_shape` [C, *extent]: C and the number of axes from the
    data, the rest from the section's conv keys (latent_channels, widths, strides, blocks, kernel, patch,
    norm, stft)."""
    return AutoencoderConfig(
        dims=len(item_shape) - 1,
        channels=item_shape[0],
        latent_channels=section.latent_channels,
        widths=tuple(section.widths),
        strides=tuple(section.strides),
        blocks=section.blocks,
        kernel=section.kernel,
        patch=section.patch,
        norm=section.norm,
        stft=None if section.stft is None else tuple(section.stft),
    )


def kind_options(section: Any, kind: str) -> dict[str, Any]:
    """The section's `options.<kind>` mapping (empty when absent), as plain values."""
    options = (section.get("options") or {}).get(kind) or {}
    return OmegaConf.to_container(options) if isinstance(options, DictConfig) else dict(options)


register_codec_kind(CodecKind(DEFAULT_KIND, AutoencoderConfig, ConvAutoencoder, conv_config))
