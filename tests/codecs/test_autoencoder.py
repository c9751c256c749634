"""The convolutional VAE codec: shapes over 1-D, 2-D and 3-D grids, its Gaussian posterior, its config and
file format, that it can learn, and the multi-resolution STFT loss it trains waveforms with."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mmdit.codecs import AutoencoderConfig, ConvAutoencoder, Posterior, load_codec, save_codec
from modalities.audio.reconstruction import multi_resolution_stft_loss

CASES = {
    1: (AutoencoderConfig(dims=1, channels=2, latent_channels=3, widths=(8, 16), strides=(4,)), (32,)),
    2: (AutoencoderConfig(dims=2, channels=3, latent_channels=4, widths=(8, 16), strides=(2,)), (8, 12)),
    3: (AutoencoderConfig(dims=3, channels=1, latent_channels=2, widths=(8, 16), strides=(2,)), (4, 6, 8)),
}


def _sines(samples: int = 512) -> torch.Tensor:
    """Four sine waveforms [4, 1, samples] of different frequencies."""
    t = torch.arange(samples) / samples
    return torch.stack([0.8 * torch.sin(2 * math.pi * f * t) for f in (3, 7, 13, 21)])[:, None]


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_latent_extent_is_the_input_over_the_downsampling(dims):
    config, extent = CASES[dims]
    torch.manual_seed(0)
    model = ConvAutoencoder(config)
    x = torch.randn(2, config.channels, *extent)
    posterior = model.encode(x)
    latent = (2, config.latent_channels, *(n // config.downsampling for n in extent))
    assert posterior.mean.shape == posterior.logvar.shape == latent
    assert model.decode(posterior.mode()).shape == x.shape
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.z.shape == latent and out.x_hat.shape == x.shape


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_patch_multiplies_the_downsampling_and_keeps_the_shapes(dims):
    config = AutoencoderConfig(dims, 2, 3, widths=(8, 8), strides=(2,), patch=4)
    model = ConvAutoencoder(config)
    assert config.downsampling == 8 and config.to_dict()["patch"] == 4
    x = torch.randn(2, 2, *(16,) * dims)
    posterior = model.encode(x)
    assert posterior.mean.shape == (2, 3, *(2,) * dims) and model.decode(posterior.mode()).shape == x.shape
    with pytest.raises(ValueError, match="patch must be 1 or even"):
        AutoencoderConfig(dims, 2, 3, widths=(8,), strides=(), patch=3)


def test_an_extent_not_divisible_by_the_downsampling_is_refused_naming_the_shape():
    config, _ = CASES[2]
    model = ConvAutoencoder(config)
    with pytest.raises(ValueError, match=re.escape("(1, 3, 8, 9)")):
        model.encode(torch.zeros(1, 3, 8, 9))


def test_kl_is_the_closed_form_and_zero_at_the_prior():
    torch.manual_seed(0)
    mean, logvar = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    expected = [
        sum(0.5 * (m**2 + math.exp(v) - 1 - v) for m, v in zip(ms, vs, strict=True))
        for ms, vs in zip(mean.double().flatten(1).tolist(), logvar.double().flatten(1).tolist(), strict=True)
    ]
    kl = Posterior(mean, logvar).kl()
    assert kl.shape == (2,)
    torch.testing.assert_close(kl.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert torch.equal(Posterior(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4)).kl(), torch.zeros(2))


def test_logvar_is_clamped_to_its_range():
    posterior = Posterior(torch.zeros(3), torch.tensor([-100.0, 0.0, 100.0]))
    assert posterior.logvar.tolist() == [-30.0, 0.0, 20.0]


def test_samples_repeat_with_a_seed_and_follow_the_posterior():
    mean = torch.tensor([[-1.0, 0.5], [2.0, 0.0]])
    logvar = torch.tensor([[0.0, -2.0], [1.0, 0.5]])
    draws = 20000
    posterior = Posterior(mean.expand(draws, 2, 2), logvar.expand(draws, 2, 2))
    first = posterior.sample(torch.Generator().manual_seed(7))
    assert torch.equal(first, posterior.sample(torch.Generator().manual_seed(7)))
    assert not torch.equal(first, posterior.sample(torch.Generator().manual_seed(8)))
    std = torch.exp(logvar / 2)
    # Five standard errors: a false failure is about one in a million per element.
    torch.testing.assert_close(first.mean(0), mean, rtol=0, atol=5 * std.max().item() / math.sqrt(draws))
    torch.testing.assert_close(first.std(0), std, rtol=0.03, atol=0)


@pytest.mark.parametrize("norm", ["none", "group"])
def test_without_norm_a_crop_encodes_and_decodes_as_the_whole_item_away_from_its_border(norm):
    # Why crops and GroupNorm do not mix (a 64^3 mesh codec trained on 32^3 crops: 0.09 on crops, 0.36 on
    # whole grids): a crop's statistics are not the whole item's. Without a norm, a crop is exact.
    config = AutoencoderConfig(
        dims=1, channels=1, latent_channels=2, widths=(4, 8), strides=(2,), patch=2, norm=norm
    )
    torch.manual_seed(0)
    model = ConvAutoencoder(config).double().eval()
    x = torch.randn(1, 1, 256, dtype=torch.float64).cumsum(-1) / 8  # smooth-ish, not zero-mean
    start, size, f = 64, 160, config.downsampling  # the crop [64, 224) of 256
    inner = slice(10, size // f - 10)  # latents 10 cells (40 samples) from the crop's border
    shifted = slice(start // f + 10, (start + size) // f - 10)
    with torch.no_grad():
        whole, crop = model.encode(x).mean, model.encode(x[..., start : start + size]).mean
        decoded_whole = model.decode(whole)[..., start + 40 : start + size - 40]
        decoded_crop = model.decode(whole[..., start // f : (start + size) // f])[..., 40 : size - 40]
    assert crop[..., inner].numel() == 40 and decoded_crop.numel() == 80
    same_latents = torch.allclose(crop[..., inner], whole[..., shifted], rtol=0, atol=1e-12)
    same_decoding = torch.allclose(decoded_crop, decoded_whole, rtol=0, atol=1e-12)
    assert same_latents == same_decoding == (norm == "none")


def test_an_unknown_norm_is_refused_naming_it():
    with pytest.raises(ValueError, match="norm must be one of.*'batch'"):
        AutoencoderConfig(dims=1, channels=1, latent_channels=2, widths=(4,), strides=(), norm="batch")


def test_config_survives_a_round_trip_through_a_dict():
    config = AutoencoderConfig(
        dims=1, channels=2, latent_channels=8, widths=(16, 32, 64), strides=(4, 8), blocks=2, kernel=7
    )
    d = config.to_dict()
    assert d["widths"] == [16, 32, 64] and d["strides"] == [4, 8]
    assert AutoencoderConfig.from_dict(d) == config
    assert config.downsampling == 32


@pytest.mark.parametrize(
    ("change", "field"),
    [({"dims": 4}, "dims"), ({"strides": (2, 2)}, "strides"), ({"strides": (3,)}, "strides")],
    ids=["dims-4", "strides-length", "stride-3"],
)
def test_a_bad_config_is_refused_naming_the_field(change, field):
    fields = {"dims": 2, "channels": 3, "latent_channels": 4, "widths": (8, 16), "strides": (2,)} | change
    with pytest.raises(ValueError, match=field):
        AutoencoderConfig(**fields)


def test_from_dict_names_an_unknown_or_a_missing_key():
    d = CASES[1][0].to_dict()
    # An export written before `norm` existed (no such key) used GroupNorm.
    assert AutoencoderConfig.from_dict({k: v for k, v in d.items() if k != "norm"}).norm == "group"
    with pytest.raises(ValueError, match="colour"):
        AutoencoderConfig.from_dict(d | {"colour": 1})
    with pytest.raises(ValueError, match="latent_channels"):
        AutoencoderConfig.from_dict({k: v for k, v in d.items() if k != "latent_channels"})


def test_a_saved_codec_loads_to_the_same_model_and_normalisation(tmp_path):
    config, extent = CASES[2]
    torch.manual_seed(0)
    model = ConvAutoencoder(config).eval()
    path = save_codec(tmp_path / "codec.safetensors", model, scale=0.18215, shift=-0.1, extra={"data": "x"})
    loaded = load_codec(path)
    assert (loaded.config, loaded.scale, loaded.shift, loaded.extra) == (config, 0.18215, -0.1, {"data": "x"})
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    x = torch.randn(2, config.channels, *extent)
    z = torch.randn(2, config.latent_channels, 4, 6)
    with torch.no_grad():
        assert torch.equal(loaded.model.encode(x).mean, model.encode(x).mean)
        assert torch.equal(loaded.model.decode(z), model.decode(z))


def test_loading_refuses_what_is_not_a_codec_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        load_codec(tmp_path / "absent.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file, only some bytes")
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        load_codec(garbage)
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match=re.escape(str(plain)) + ".*codec"):
        load_codec(plain)


def test_a_tiny_waveform_autoencoder_learns_four_sines():
    torch.manual_seed(0)
    config = AutoencoderConfig(dims=1, channels=1, latent_channels=4, widths=(8, 16), strides=(4,), kernel=7)
    model = ConvAutoencoder(config)
    x = _sines()

    def reconstruction_loss(x_hat: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(x_hat, x) + multi_resolution_stft_loss(x_hat, x, ffts=(64, 128))

    def deterministic_loss() -> float:
        with torch.no_grad():
            return reconstruction_loss(model.decode(model.encode(x).mode())).item()

    start = deterministic_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        out = model(x, generator=generator)
        loss = reconstruction_loss(out.x_hat) + 1e-4 * out.posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = deterministic_loss()
    assert end < 0.5 * start


def test_stft_loss_is_zero_for_identical_waveforms_and_grows_with_the_noise():
    clean = _sines()[:, :, :256].expand(4, 2, 256)  # two channels, folded into the batch
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=generator)
    ffts = (64, 128)
    assert multi_resolution_stft_loss(clean, clean, ffts=ffts).item() <= 1e-6
    slight = multi_resolution_stft_loss(clean + 0.01 * noise, clean, ffts=ffts)
    noisy = multi_resolution_stft_loss(clean + 0.3 * noise, clean, ffts=ffts)
    assert 0 < slight < noisy


def test_stft_loss_hears_a_partial_down_to_the_judges_floor():
    # A partial 100 dB below full scale, under a full-scale tone: far above the judge's log-mel floor
    # (power 1e-8, 128 dB below a full-scale sine), so the loss must hear it; one 140 dB down it must not.
    t = torch.arange(4096, dtype=torch.float64) / 16000
    tone = torch.sin(2 * math.pi * 440 * t)[None, None].float()
    partial = torch.sin(2 * math.pi * 3000 * t)[None, None].float()
    quiet, silent = (10 ** (db / 20) * partial for db in (-100, -140))
    assert multi_resolution_stft_loss(tone + quiet, tone) > 1e-2
    assert multi_resolution_stft_loss(tone + silent, tone) < 1e-3
