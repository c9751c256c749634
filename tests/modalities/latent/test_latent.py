"""The latent adapter: unscaled patch tokens, sin-cos grids, .safetensors files and folders, previews."""

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modalities import build_adapter
from modalities.latent.adapter import LatentAdapter


def test_encode_decode_is_exact_and_unscaled():
    adapter = LatentAdapter(channels=4, patch_size=2, size=(8, 12))
    latents = 3 * torch.randn(2, 4, 8, 12)
    tokens = adapter.encode(latents)
    assert tokens.x.shape == (2, 24, 16) and tokens.mask.all()
    assert tokens.x.abs().max() > 1  # values pass through as they are, not mapped into [-1, 1]
    assert torch.equal(adapter.decode(tokens), latents)
    with pytest.raises(ValueError, match=r"latent media must be \[B, C=4"):
        adapter.encode(torch.zeros(2, 3, 8, 12))


def test_stream_layout_and_options():
    adapter = build_adapter("latent", size=[8, 12])
    spec = adapter.stream("image")
    assert (spec.features, spec.positions, spec.axes, spec.grid) == (16, "sincos", 2, (4, 6))
    tokens = adapter.layout(3, size=(4, 4))
    assert tokens.x.shape == (3, 4, 16) and not tokens.x.any() and tokens.mask.all()
    assert adapter.decode(adapter.layout(2)).shape == (2, 4, 8, 12)
    with pytest.raises(ValueError, match="latent positions"):
        LatentAdapter(positions="learned")
    with pytest.raises(ValueError, match=r"latent size \(8, 7\)"):
        LatentAdapter(size=(8, 7))


def test_files_folders_and_preview(tmp_path):
    adapter = LatentAdapter(channels=4, size=(8, 8))
    for i, name in enumerate(["cat", "cat", "dog", "dog", "dog"]):
        adapter.save(torch.full((4, 8, 8), float(i)), tmp_path / "latents" / name / f"{i}.safetensors")
    loaded = adapter.load(tmp_path / "latents" / "dog" / "4.safetensors")
    assert torch.equal(loaded, torch.full((4, 8, 8), 4.0))
    train, heldout = (adapter.dataset({"folder": tmp_path / "latents"}, s) for s in ("train", "heldout"))
    assert len(train) + len(heldout) == 5 and train.classes == {"class": ["cat", "dog"]}
    save_file({"other": torch.zeros(4, 8, 8)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="has no tensor 'latent'"):
        adapter.load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"\(4, 8, 8\), expected \[3, H, W\]"):
        LatentAdapter(channels=3).load(tmp_path / "latents" / "cat" / "0.safetensors")
    path = adapter.preview(torch.randn(5, 4, 8, 8), tmp_path / "grid.png")
    # The first three channels as RGB, 3 columns × 2 rows of 64-px cells with 2-px padding around each.
    with Image.open(path) as image:
        assert image.mode == "RGB" and image.size == (3 * 66 + 2, 2 * 66 + 2)
