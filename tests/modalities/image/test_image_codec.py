"""The image adapter over a learned codec (`ImageAdapter(codec=PATH)`): tokens are patches of the codec's
normalised latents, checked against diffusers' own AutoencoderKL on a tiny random model saved to disk."""

import re

import pytest
import torch
from einops import rearrange

from mmdit.codecs import AutoencoderConfig, ConvAutoencoder, save_codec
from modalities.image.adapter import ImageAdapter
from modalities.registry import build_adapter

diffusers = pytest.importorskip("diffusers")

SCALE, SHIFT = 0.5, 0.1


def tiny_vae(seed: int) -> "diffusers.AutoencoderKL":
    """A random AutoencoderKL with f = 2 (two levels), 4 latent channels, RGB in and out."""
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    ).eval()


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    """(folder, the model saved there)."""
    folder = tmp_path_factory.mktemp("vae") / "tiny-kl"
    vae = tiny_vae(0)
    vae.save_pretrained(folder)
    return folder, vae


def adapter_for(folder, **options) -> ImageAdapter:
    return ImageAdapter(
        **({"channels": 3, "patch_size": 2, "size": (16, 16), "codec": str(folder)} | options)
    )


def patchify_reference(z):
    return rearrange(z, "b c (h p) (w q) -> b (h w) (p q c)", p=2, q=2)


def test_shapes_stream_and_layout(vae_folder):
    folder, _ = vae_folder
    adapter = adapter_for(folder)
    assert (adapter.channels, adapter.image_channels, adapter.downsampling) == (4, 3, 2)
    tokens = adapter.encode(torch.rand(2, 3, 16, 16))
    assert tokens.x.shape == (2, 16, 16) and tokens.pos.shape == (2, 16, 2) and tokens.mask.all()
    assert tokens.pos[0, :5].tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    assert adapter.stream("image").features == 16
    layout = adapter.layout(2)
    assert layout.x.shape == (2, 16, 16) and not layout.x.any() and layout.mask.all()
    assert torch.equal(layout.pos, tokens.pos)
    small = adapter.layout(2, size=(8, 8))
    assert small.x.shape == (2, 4, 16) and small.pos[0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert adapter_for(folder, positions="sincos").stream("image").grid == (4, 4)


def test_encode_matches_diffusers_in_float64(vae_folder):
    folder, vae = vae_folder
    adapter = adapter_for(folder)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    # float32 (as trained): the same computation as diffusers' own.
    with torch.no_grad():
        mean = vae.encode(images.float() * 2 - 1).latent_dist.mean
    got = adapter.encode(images.float()).x
    assert got.dtype == torch.float32
    assert (got - patchify_reference((mean - SHIFT) * SCALE)).abs().max() < 1e-6

    # float64: both models cast, the adapter computes in its codec's dtype.
    adapter.codec.model.double()
    reference = tiny_vae(0).double()
    reference.load_state_dict(vae.state_dict())
    with torch.no_grad():
        mean = reference.encode(images * 2 - 1).latent_dist.mean
    got = adapter.encode(images).x
    assert got.dtype == torch.float64
    assert (got - patchify_reference((mean - SHIFT) * SCALE)).abs().max() < 1e-12


def test_decode_matches_diffusers_in_float64(vae_folder):
    folder, vae = vae_folder
    adapter = adapter_for(folder)
    adapter.codec.model.double()
    reference = tiny_vae(0).double()
    reference.load_state_dict(vae.state_dict())
    layout = adapter.layout(2)
    x = torch.randn(layout.x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    images = adapter.decode(layout.with_x(x))
    latents = rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=4, w=4, p=2, q=2)
    with torch.no_grad():
        expected = ((reference.decode(latents / SCALE + SHIFT).sample + 1) / 2).clamp(0, 1)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float64
    assert (images - expected).abs().max() < 1e-12
    assert images.min() >= 0 and images.max() <= 1


def test_errors_name_the_size_and_the_codec(vae_folder):
    folder, _ = vae_folder
    with pytest.raises(ValueError, match=r"\(10, 10\).*downsampling 2.*patch_size 2"):
        adapter_for(folder, size=(10, 10))
    adapter = adapter_for(folder)
    with pytest.raises(ValueError, match=r"\(6, 8\).*downsampling 2"):
        adapter.layout(1, size=(6, 8))
    with pytest.raises(ValueError, match=r"\(1, 3, 10, 12\)"):
        adapter.encode(torch.rand(1, 3, 10, 12))
    with pytest.raises(ValueError, match=r"C=3"):
        adapter.encode(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=re.escape(str(folder)) + r".*3 channel"):
        adapter_for(folder, channels=1)


def test_a_one_dimensional_codec_is_refused(tmp_path):
    config = AutoencoderConfig(dims=1, channels=3, latent_channels=2, widths=(4, 4), strides=(2,))
    path = save_codec(tmp_path / "codec.safetensors", ConvAutoencoder(config), scale=1.0, shift=0.0)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*1-D"):
        adapter_for(path)


def test_encoding_identity_follows_the_weights(tmp_path):
    folder = tmp_path / "kl"
    tiny_vae(0).save_pretrained(folder)
    first = adapter_for(folder).encoding_identity()
    assert set(first) == {"codec"} and adapter_for(folder).encoding_identity() == first
    tiny_vae(1).save_pretrained(folder)
    assert adapter_for(folder).encoding_identity() != first
    assert ImageAdapter(channels=3, patch_size=2, size=(16, 16)).encoding_identity() == {}


def test_our_own_codec_export(tmp_path):
    config = AutoencoderConfig(dims=2, channels=3, latent_channels=2, widths=(4, 4), strides=(4,))
    path = save_codec(tmp_path / "codec.safetensors", ConvAutoencoder(config), scale=2.0, shift=0.5)
    adapter = adapter_for(path)
    tokens = adapter.encode(torch.rand(2, 3, 16, 16))
    assert tokens.x.shape == (2, 4, 8) and adapter.stream("image").features == 8
    assert adapter.decode(tokens).shape == (2, 3, 16, 16)
    assert len(adapter.encoding_identity()["codec"]) == 64


def test_built_from_recipe_options_decodes_a_layout(vae_folder):
    folder, _ = vae_folder
    entry = {
        "modality": "image",
        "options": {"channels": 3, "patch_size": 2, "size": [16, 16], "codec": str(folder)},
    }
    adapter = build_adapter(entry["modality"], **entry["options"])
    images = adapter.decode(adapter.layout(2))
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_a_codec_stage_feeds_its_codec_what_the_adapter_encodes(vae_folder, monkeypatch):
    folder, _ = vae_folder
    adapter = adapter_for(folder)
    seen = []
    encode = adapter.codec.model.encode
    monkeypatch.setattr(adapter.codec.model, "encode", lambda x: seen.append(x) or encode(x))
    media = torch.rand(2, 3, 16, 16)
    adapter.encode(media)
    torch.testing.assert_close(seen[0], adapter.codec_values(media), rtol=0, atol=0)
    torch.testing.assert_close(adapter.codec_media(adapter.codec_values(media)), media, rtol=0, atol=1e-7)
