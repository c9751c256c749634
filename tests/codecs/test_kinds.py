"""Codec kinds: the built-in conv kind, a kind registered at run time building, exporting and loading
through the same functions, exports from before kinds loading as conv, and errors that name the kind."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmdit.codecs import (
    AutoencoderConfig,
    CodecKind,
    ConvAutoencoder,
    Posterior,
    codec_kind,
    kinds,
    load_codec,
    register_codec_kind,
    save_codec,
)


def test_the_conv_kind_is_the_autoencoder():
    kind = codec_kind("conv")
    assert (kind.config, kind.model) == (AutoencoderConfig, ConvAutoencoder)
    assert kind.statistics is kinds.global_statistics


def test_global_and_channel_statistics_give_unit_variance_in_float64():
    z = torch.randn(5, 3, 7, dtype=torch.float64) * torch.tensor([1.0, 4.0, 0.5])[:, None] + 2.0
    shift, scale = kinds.global_statistics(z)
    assert ((z - shift) * scale).std().item() == pytest.approx(1.0, abs=1e-12)
    assert ((z - shift) * scale).mean().item() == pytest.approx(0.0, abs=1e-12)
    shifts, scales = kinds.channel_statistics(z)
    shifts, scales = (torch.tensor(v, dtype=z.dtype)[:, None] for v in (shifts, scales))
    normalised = (z - shifts) * scales
    per_channel = normalised.transpose(0, 1).flatten(1)
    assert torch.allclose(per_channel.std(1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_an_export_from_before_kinds_loads_as_a_conv_codec(tmp_path):
    torch.manual_seed(0)
    config = AutoencoderConfig(dims=1, channels=1, latent_channels=2, widths=(4, 4), strides=(2,))
    model = ConvAutoencoder(config).eval()
    path = tmp_path / "old.safetensors"
    metadata = {
        "codec": "conv-autoencoder",
        "config": json.dumps(config.to_dict()),
        "scale": repr(0.18215),
        "shift": repr(-0.1),
        "extra": "{}",
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata=metadata)
    loaded = load_codec(path)
    assert (loaded.config, loaded.scale, loaded.shift) == (config, 0.18215, -0.1)
    z = torch.randn(1, 2, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model.decode(z), model.decode(z))


@dataclass(frozen=True)
class _ScaleConfig:
    channels: int
    dims = 1
    downsampling = 1

    @property
    def latent_channels(self) -> int:
        return self.channels

    def to_dict(self) -> dict[str, int]:
        return {"channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> _ScaleConfig:
        return cls(**d)


class _Scale(nn.Module):
    """z = w · x: the smallest codec."""

    def __init__(self, config: _ScaleConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.full((config.channels, 1), 2.0))

    def encode(self, x: torch.Tensor) -> Posterior:
        return Posterior(self.weight * x, torch.zeros_like(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.weight


def test_a_registered_kind_exports_and_loads_by_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(kinds, "_kinds", dict(kinds._kinds))  # the registration ends with the test
    register_codec_kind(CodecKind("test-scale", _ScaleConfig, _Scale, lambda *_: _ScaleConfig(1)))
    model = _Scale(_ScaleConfig(3))
    path = save_codec(tmp_path / "codec.safetensors", model, scale=[1.0, 2.0, 3.0], shift=0.5)
    loaded = load_codec(path)
    assert isinstance(loaded.model, _Scale) and loaded.config == _ScaleConfig(3)
    assert (loaded.scale, loaded.shift) == ([1.0, 2.0, 3.0], 0.5)


def test_an_unknown_kind_is_an_error_naming_it():
    with pytest.raises(KeyError, match="unknown codec kind 'nothing'; registered: .*conv"):
        codec_kind("nothing")
