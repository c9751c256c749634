"""The image adapter: patch round trips through the adapter, files, datasets, previews and evaluation (the
patch functions themselves: tests/modalities/common/test_patches.py)."""

import numpy as np
import pytest
import torch
from PIL import Image

from modalities.common.digits import DigitsDataset
from modalities.common.patches import patchify
from modalities.image.adapter import ImageAdapter
from modalities.image.datasets import ImageFolder


def test_patchify_names_an_indivisible_shape():
    with pytest.raises(ValueError, match=r"\(1, 3, 6, 7\)"):
        patchify(torch.zeros(1, 3, 6, 7), 2)
    with pytest.raises(ValueError, match=r"\(8, 7\)"):
        ImageAdapter(size=(8, 7))


def test_encode_decode_round_trip():
    adapter = ImageAdapter(channels=3, patch_size=2, size=(8, 12))
    images = torch.rand(3, 3, 8, 12)
    tokens = adapter.encode(images)
    assert tokens.x.shape == (3, 24, 12) and tokens.mask.all()
    assert tokens.x.min() >= -1 and tokens.x.max() <= 1
    assert (adapter.decode(tokens) - images).abs().max() < 1e-6


def test_layout_and_stream():
    adapter = ImageAdapter(channels=1, patch_size=2, size=(8, 12), positions="sincos")
    tokens = adapter.layout(5)
    assert tokens.x.shape == (5, 24, 4) and not tokens.x.any() and tokens.mask.all()
    assert adapter.layout(2, size=(4, 4)).pos[0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert adapter.decode(adapter.layout(2, size=(6, 10))).shape == (2, 1, 6, 10)
    spec = adapter.stream("image")
    assert (spec.features, spec.positions, spec.axes, spec.grid) == (4, "sincos", 2, (4, 6))
    assert ImageAdapter().stream("image").grid is None


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_save_load_png_round_trip_is_exact(tmp_path, channels):
    adapter = ImageAdapter(channels=channels)
    item = torch.randint(0, 256, (channels, 5, 7)).float() / 255
    path = adapter.save(item, tmp_path / "out" / "x.png")
    assert torch.equal(adapter.load(path), item)


def test_load_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        ImageAdapter().load(path)


def write_png(path, value, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_image_folder_labels_and_splits(tmp_path):
    for i in range(6):
        write_png(tmp_path / "cats" / f"{i}.png", 10 * i)
    for i in range(4):
        write_png(tmp_path / "dogs" / "nested" / f"{i}.jpg", 200)
    train = ImageFolder(tmp_path, "train", size=(8, 8), channels=1, heldout_fraction=0.2)
    heldout = ImageFolder(tmp_path, "heldout", size=(8, 8), channels=1, heldout_fraction=0.2)
    assert train.classes == {"class": ["cats", "dogs"]}
    assert (len(train), len(heldout)) == (8, 2)
    assert set(train.files).isdisjoint(heldout.files) and len(set(train.files) | set(heldout.files)) == 10
    for data in (train, heldout):
        for i in range(len(data)):
            item = data[i]
            assert item["media"].shape == (1, 8, 8)
            assert item["labels"]["class"] == (0 if data.files[i].parts[-2] == "cats" else 1)


def test_image_folder_without_sub_folders_has_no_labels(tmp_path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", 0)
    data = ImageFolder(tmp_path, "train")
    assert data.classes == {} and data[0]["labels"] == {} and data[0]["media"].shape == (3, 4, 6)


def test_image_folder_errors_name_the_file_or_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty)):
        ImageFolder(empty, "train")
    write_png(tmp_path / "a" / "good.png", 0)
    (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'a' / 'bad.png'}"):
        ImageFolder(tmp_path, "train", heldout_fraction=0.0)  # the header check, before any training
    noise = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a" / "bad.png")
    truncated = (tmp_path / "a" / "bad.png").read_bytes()[:100]  # a good header, a truncated body
    (tmp_path / "a" / "bad.png").write_bytes(truncated)
    data = ImageFolder(tmp_path, "train", heldout_fraction=0.0)
    bad = data.files.index(tmp_path / "a" / "bad.png")
    with pytest.raises(ValueError, match=str(tmp_path / "a" / "bad.png")):
        data[bad]


def test_dataset_sources():
    adapter = ImageAdapter(channels=1, size=(8, 8))
    assert isinstance(adapter.dataset("digits", "train"), DigitsDataset)
    with pytest.raises(KeyError, match="digits"):
        adapter.dataset("mnist", "train")
    with pytest.raises(ValueError, match="heldout"):
        adapter.dataset("digits", "test")
    with pytest.raises(ValueError, match="size"):
        ImageAdapter(channels=1, size=(16, 16)).dataset("digits", "train")


def test_preview_grid(tmp_path):
    adapter = ImageAdapter(channels=1, size=(8, 8))
    media = DigitsDataset("heldout").images[:10]
    path = adapter.preview(media, tmp_path / "grid.png")
    # 4 columns × 3 rows of 64-px cells with 2-px padding around each.
    assert Image.open(path).size == (4 * 66 + 2, 3 * 66 + 2)


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset("train"), DigitsDataset("heldout")


def test_evaluate_real_heldout_matches_reference(digits):
    train, heldout = digits
    adapter = ImageAdapter(channels=1, size=(8, 8))
    scores = adapter.evaluate(heldout.images, {"digit": heldout.labels}, train, heldout)
    assert scores["generated"]["accuracy"] == scores["reference"]["accuracy"] >= 0.97
    assert scores["generated"]["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert scores["generated"]["samples"] == len(heldout)


def test_evaluate_noise_scores_badly(digits):
    train, heldout = digits
    adapter = ImageAdapter(channels=1, size=(8, 8))
    noise = torch.rand(len(heldout), 1, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = adapter.evaluate(noise, {"digit": heldout.labels}, train, heldout)
    assert scores["generated"]["accuracy"] < 0.3
    assert scores["generated"]["frechet_distance"] > 10 * scores["reference"]["frechet_distance"]
