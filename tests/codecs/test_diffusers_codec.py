"""A local diffusers autoencoder folder loads as a codec: its shape and latent normalisation come from the
config, and the wrapper computes what diffusers computes. Tiny random models saved to a tmp folder, both
sides in float64, so the comparison is exact up to rounding and no thread count or library update moves
it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderOobleck

from mmdit.codecs import CodecShape, DiffusersAutoencoder, load_codec

# diffusers' Oobleck builds its convolutions with the deprecated torch.nn.utils.weight_norm: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")

FLOAT64_TOLERANCE = 1e-12
"""Of the output's scale: the same float64 ops in the same order differ by rounding at most, so any real
difference (a swapped mean and logvar, a skipped quant conv) shows far above it."""


def _close_to_scale(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == theirs.dtype == torch.float64 and ours.shape == theirs.shape
    error = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert error <= FLOAT64_TOLERANCE * scale, (
        f"max |difference| {error:.3g} above {FLOAT64_TOLERANCE:g} of {scale:.3g}"
    )


def _kl_folder(tmp_path: Path) -> Path:
    """A tiny random AutoencoderKL (f = 2, 4 latent channels) saved in tmp_path / "kl"."""
    torch.manual_seed(0)
    model = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.5,
        shift_factor=0.1,
    )
    model.save_pretrained(tmp_path / "kl")
    return tmp_path / "kl"


def _oobleck_folder(tmp_path: Path) -> Path:
    """A tiny random AutoencoderOobleck (stereo, f = 2 · 4, 4 latent channels) in tmp_path / "oobleck"."""
    torch.manual_seed(0)
    model = AutoencoderOobleck(
        encoder_hidden_size=8,  # twice the latent channels: the encoder emits mean and scale
        downsampling_ratios=[2, 4],
        channel_multiples=[1, 2],
        decoder_channels=8,
        decoder_input_channels=4,
        audio_channels=2,
        sampling_rate=16000,
    )
    model.save_pretrained(tmp_path / "oobleck")
    return tmp_path / "oobleck"


def test_an_autoencoder_kl_folder_computes_what_diffusers_computes(tmp_path):
    folder = _kl_folder(tmp_path)
    codec = load_codec(folder)
    assert isinstance(codec.model, DiffusersAutoencoder)
    assert codec.config == CodecShape(dims=2, channels=3, latent_channels=4, downsampling=2)
    assert (codec.scale, codec.shift) == (0.5, 0.1)
    assert codec.extra == {"diffusers": "AutoencoderKL", "folder": str(folder)}
    assert not codec.model.training and not any(p.requires_grad for p in codec.model.parameters())

    ours, theirs = codec.model.double(), AutoencoderKL.from_pretrained(folder, local_files_only=True).double()
    x = torch.rand(2, 3, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior, expected = ours.encode(x), theirs.encode(x).latent_dist
        assert posterior.mode().shape == (2, 4, 8, 6)
        _close_to_scale(posterior.mode(), expected.mean)
        _close_to_scale(posterior.logvar, expected.logvar)
        z = posterior.mode()
        _close_to_scale(ours.decode(z), theirs.decode(z).sample)


def test_an_oobleck_folder_computes_what_diffusers_computes(tmp_path):
    folder = _oobleck_folder(tmp_path)
    codec = load_codec(folder)
    assert codec.config == CodecShape(dims=1, channels=2, latent_channels=4, downsampling=8)
    assert (codec.scale, codec.shift) == (1.0, 0.0)
    assert codec.extra == {"diffusers": "AutoencoderOobleck", "folder": str(folder)}
    assert not codec.model.training and not any(p.requires_grad for p in codec.model.parameters())

    ours = codec.model.double()
    theirs = AutoencoderOobleck.from_pretrained(folder, local_files_only=True).double()
    x = torch.rand(2, 2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior, expected = ours.encode(x), theirs.encode(x).latent_dist
        assert posterior.mode().shape == (2, 4, 8)
        _close_to_scale(posterior.mode(), expected.mean)
        # Oobleck's `scale` is the raw encoder output; its standard deviation is `std`.
        _close_to_scale(posterior.logvar, 2 * torch.log(expected.std))
        z = posterior.mode()
        _close_to_scale(ours.decode(z), theirs.decode(z).sample)


def test_the_wrapper_rejects_media_of_the_wrong_shape(tmp_path):
    model = load_codec(_oobleck_folder(tmp_path)).model
    with pytest.raises(ValueError, match=r"expected \[B, 2, \.\.\.\] with 1 spatial axes"):
        model.encode(torch.zeros(1, 1, 64))
    with pytest.raises(ValueError, match="divisible by the downsampling factor 8"):
        model.encode(torch.zeros(1, 2, 60))
    with pytest.raises(ValueError, match=r"latent of shape \(1, 3, 8\)"):
        model.decode(torch.zeros(1, 3, 8))


def test_a_folder_that_is_no_supported_autoencoder_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + r".*'UNet2DModel'.*AutoencoderKL"):
        load_codec(tmp_path)
