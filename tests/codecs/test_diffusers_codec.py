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
from diffusers import AutoencoderKL, AutoencoderKLCogVideoX, AutoencoderKLWan, AutoencoderOobleck

from mmdit.codecs import CodecShape, DiffusersAutoencoder, FrozenCodec, TimeFolding, load_codec, time_folding

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


def _wan_folder(tmp_path: Path) -> Path:
    """A tiny random AutoencoderKLWan (spatial f = 4, temporal ×4 causal, 4 latent channels) in
    tmp_path / "wan", with per-channel latent statistics as Wan's own config has."""
    torch.manual_seed(0)
    model = AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[2.0, 0.5, 1.0, 4.0],
    )
    model.save_pretrained(tmp_path / "wan")
    return tmp_path / "wan"


def _cogvideox_folder(tmp_path: Path) -> Path:
    """A tiny random AutoencoderKLCogVideoX (spatial f = 4, temporal ×4 causal, 4 latent channels)."""
    torch.manual_seed(0)
    model = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16),
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        scaling_factor=0.7,
    )
    model.save_pretrained(tmp_path / "cogvideox")
    return tmp_path / "cogvideox"


@pytest.mark.parametrize(
    ("make_folder", "diffusers_class", "scale", "shift"),
    [
        (_wan_folder, AutoencoderKLWan, [0.5, 2.0, 1.0, 0.25], [0.1, -0.2, 0.3, 0.0]),
        (_cogvideox_folder, AutoencoderKLCogVideoX, 0.7, 0.0),
    ],
    ids=["wan", "cogvideox"],
)
def test_a_video_vae_folder_computes_what_diffusers_computes(
    tmp_path, make_folder, diffusers_class, scale, shift
):
    folder = make_folder(tmp_path)
    codec = load_codec(folder)
    assert isinstance(codec.model, DiffusersAutoencoder)
    assert codec.config == CodecShape(3, 3, 4, 4, temporal_downsampling=4, causal=True)
    assert time_folding(codec.config) == TimeFolding(4, True)
    assert codec.scale == pytest.approx(scale) and codec.shift == pytest.approx(shift)
    assert codec.extra == {"diffusers": diffusers_class.__name__, "folder": str(folder)}
    assert not codec.model.training and not any(p.requires_grad for p in codec.model.parameters())

    ours, theirs = (
        codec.model.double(),
        diffusers_class.from_pretrained(folder, local_files_only=True).double(),
    )
    # 9 frames: the first alone, then two groups of four -> 3 latent frames.
    x = torch.rand(2, 3, 9, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        posterior, expected = ours.encode(x), theirs.encode(x).latent_dist
        assert posterior.mode().shape == (2, 4, 3, 4, 3)
        _close_to_scale(posterior.mode(), expected.mean)
        _close_to_scale(posterior.logvar, expected.logvar)
        z = posterior.mode()
        decoded = ours.decode(z)
        assert decoded.shape == x.shape
        _close_to_scale(decoded, theirs.decode(z).sample)


def test_a_video_vae_takes_one_plus_a_multiple_of_its_time_factor_frames(tmp_path):
    model = load_codec(_wan_folder(tmp_path)).model
    with pytest.raises(ValueError, match=r"1 \+ k · 4 frames, got 8 \(pad with the last frame\)"):
        model.encode(torch.zeros(1, 3, 8, 16, 16))
    with pytest.raises(
        ValueError, match="every spatial extent must be divisible by the downsampling factor 4"
    ):
        model.encode(torch.zeros(1, 3, 5, 16, 14))
    with pytest.raises(ValueError, match=r"expected \[B, 3, \.\.\.\] with 3 spatial axes"):
        model.encode(torch.zeros(1, 3, 16, 16))


def test_a_frozen_wan_codec_normalises_each_channel_as_wan_pipelines_do(tmp_path):
    folder = _wan_folder(tmp_path)
    frozen = FrozenCodec(folder, 3, 3, "clips", "a video VAE")
    assert frozen.time == TimeFolding(4, True)
    theirs = AutoencoderKLWan.from_pretrained(folder, local_files_only=True)
    x = torch.rand(1, 3, 5, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0]).view(1, 4, 1, 1, 1)
    std = torch.tensor([2.0, 0.5, 1.0, 4.0]).view(1, 4, 1, 1, 1)
    with torch.no_grad():
        latents = frozen.encode(x)
        torch.testing.assert_close(latents, (theirs.encode(x).latent_dist.mean - mean) / std)
        torch.testing.assert_close(frozen.decode(latents), theirs.decode(latents * std + mean).sample)
    with pytest.raises(ValueError, match=r"encodes 3-D media of 3 channel\(s\); clips of 1 channel"):
        FrozenCodec(folder, 3, 1, "clips", "a video VAE")


def test_a_wan_vae_that_does_not_fold_time_by_four_is_refused(tmp_path):
    AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2],
        attn_scales=[],
        temperal_downsample=[True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"must fold time by 4 .*\[True\] folds it by 2"):
        load_codec(tmp_path)
