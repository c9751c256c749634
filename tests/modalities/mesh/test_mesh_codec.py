"""Meshes through a learned SDF codec: the surface-weighted reconstruction loss, the codec tokenizer against
the codec itself (a tiny random ConvAutoencoder saved as an export), and both stages through the command
line on a user's folder of meshes (codec fit, `mmdit prepare` of its latents, diffusion fit and sampling)."""

import json

import numpy as np
import pytest
import torch
import trimesh
from einops import rearrange

from mmdit.cli import main
from mmdit.codecs import AutoencoderConfig, ConvAutoencoder, load_codec, save_codec
from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.data import MediaDataModule
from mmdit.training.token_cache import CachedDataModule
from modalities import build_adapter
from modalities.mesh.adapter import SURFACE_WEIGHT, MeshAdapter


def test_reconstruction_loss_weights_the_truncation_band():
    target = torch.tensor([1.0, -1.0, 0.5, -0.25]).reshape(1, 1, 1, 1, 4)
    prediction = torch.tensor([0.0, -1.0, 0.0, 0.75]).reshape(1, 1, 1, 1, 4)
    w = SURFACE_WEIGHT
    expected = (1.0 * 1 + 0.0 * 1 + 0.5 * w + 1.0 * w) / (2 + 2 * w)
    got = MeshAdapter().reconstruction_loss(prediction, target)
    assert torch.allclose(got, torch.tensor(expected))


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory):
    """A random 3-D codec: 16³ grids -> 4³ × 3 latents (patch 2, then ×2), with a shift and scale."""
    torch.manual_seed(0)
    config = AutoencoderConfig(dims=3, channels=1, latent_channels=3, widths=(4, 8), strides=(2,), patch=2)
    path = tmp_path_factory.mktemp("codec") / "codec.safetensors"
    save_codec(path, ConvAutoencoder(config).eval(), scale=0.7, shift=0.2, extra={"modality": "mesh"})
    return path


def test_codec_tokens_are_patches_of_normalised_latents_and_decode_through_the_codec(codec_path):
    adapter = MeshAdapter(resolution=16, patch_size=2, codec=str(codec_path))
    codec = load_codec(codec_path)
    grids = torch.rand(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tokens = adapter.encode(grids)
    assert tokens.x.shape == (2, 8, 24) and tokens.pos.shape == (2, 8, 3) and tokens.mask.all()
    assert adapter.stream("mesh").features == 24 and adapter.stream("mesh").axes == 3
    with torch.no_grad():
        z = codec.model.encode(grids).mode()
        expected_grids = codec.model.decode(z).clamp(-1, 1)
    latents = (z - 0.2) * 0.7
    expected = rearrange(latents, "b c (x p) (y q) (z r) -> b (x y z) (p q r c)", p=2, q=2, r=2)
    assert torch.allclose(tokens.x, expected, atol=1e-6)
    assert tokens.pos[0].tolist() == [[i, j, k] for i in range(2) for j in range(2) for k in range(2)]
    assert torch.allclose(adapter.decode(tokens), expected_grids, atol=1e-5)
    layout = adapter.layout(3)
    assert layout.x.shape == (3, 8, 24) and torch.equal(layout.pos[:2], tokens.pos)
    assert adapter.encoding_identity() == {"codec": adapter.tokenizer.codec.digest}
    assert adapter.tokenizer.settings == MeshAdapter(resolution=16).tokenizer.settings  # one grid cache


def test_a_codec_that_does_not_fit_is_refused(codec_path, tmp_path):
    with pytest.raises(ValueError, match="divisible by the codec's downsampling 4 × patch_size 4"):
        MeshAdapter(resolution=24, patch_size=4, codec=str(codec_path))
    with pytest.raises(ValueError, match="tokenizer 'sdf' takes it"):
        MeshAdapter(tokenizer="points", codec=str(codec_path))
    image_codec = tmp_path / "image.safetensors"
    config = AutoencoderConfig(dims=2, channels=1, latent_channels=2, widths=(4,), strides=())
    save_codec(image_codec, ConvAutoencoder(config), scale=1.0, shift=0.0)
    with pytest.raises(ValueError, match="2-D media"):
        MeshAdapter(resolution=16, codec=str(image_codec))


CODEC = [
    "streams.mesh.options.resolution=16",
    "autoencoder.latent_channels=4",
    "autoencoder.patch=2",
    "autoencoder.widths=[4,8]",
    "autoencoder.strides=[2]",
    "autoencoder.statistics_items=8",
    "data.batch_size=4",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "optimizer.warmup_steps=1",
    "sample.grid=2",
    "conditioning.labels=[class]",
]
LATENT = [
    "streams.mesh.options.resolution=16",
    "streams.mesh.options.patch_size=2",
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=4",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optimizer.warmup_steps=1",
    "sample.steps=2",
    "sample.grid=3",
    "eval.samples=3",
    "conditioning.labels=[class]",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A user's meshes: three classes of trimesh primitives, four each, as OBJ and STL files."""
    root = tmp_path_factory.mktemp("meshes")
    makers = {
        "box": lambda s: trimesh.creation.box(extents=(0.5 + 0.1 * s, 0.4, 0.3)),
        "ball": lambda s: trimesh.creation.icosphere(subdivisions=2, radius=0.3 + 0.05 * s),
        "can": lambda s: trimesh.creation.cylinder(radius=0.2 + 0.03 * s, height=0.6),
    }
    for name, make in makers.items():
        (root / name).mkdir()
        for s in range(4):
            make(s).export(root / name / f"{s}.{'obj' if s % 2 else 'stl'}")
    return root


def test_both_stages_run_on_a_folder_of_meshes(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("MMDIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    source = f"data.source.folder={folder}"
    codec_dir = tmp_path / "codec"
    assert main(["fit", "mesh-shapes-codec", *CODEC, source, f"run_dir={codec_dir}"]) == 0
    report = json.loads((codec_dir / "eval.json").read_text())
    assert report["codec"]["latent_shape"] == [4, 4, 4, 4] and report["codec"]["compression"] == 16.0
    assert report["reference"]["watertight"] == 1.0 and "one_nna_cd" in report["reconstructed"]
    assert (codec_dir / "samples.png").is_file()

    codec = f"streams.mesh.options.codec={codec_dir / 'codec.safetensors'}"
    assert main(["prepare", "mesh-shapes-latent", *LATENT, source, codec]) == 0
    recipe = load_recipe("mesh-shapes-latent", [*LATENT, source, codec])
    adapters = build_adapters(recipe)
    cached = CachedDataModule(recipe, adapters).heldout[0]
    item = MediaDataModule(recipe, adapters).heldout[0]
    tokens = adapters["mesh"].encode(item["media"][None])
    assert torch.allclose(cached["tokens"]["x"], tokens.x[0], atol=1e-5)
    assert torch.equal(cached["tokens"]["pos"], tokens.pos[0])

    run_dir = tmp_path / "latent"
    assert main(["fit", "mesh-shapes-latent", *LATENT, source, codec, f"run_dir={run_dir}"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["generated"]["samples"] == 3 and "watertight" in report["generated"]
    out = tmp_path / "samples"
    args = ["sample", str(run_dir / "weights.safetensors"), "--n", "2", "--label", "ball", "--steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    objs = sorted(out.glob("*.obj"))
    assert len(objs) == 2
    for path in objs:
        if "\nf " in path.read_text():  # an untrained model may draw nothing
            assert np.abs(trimesh.load(path).vertices).max() <= 0.5 + 1e-6
    assert build_adapter("mesh", resolution=16, patch_size=2, codec=str(codec_dir / "codec.safetensors"))
