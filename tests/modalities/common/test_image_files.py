"""Image files of every depth and mode read into [0, 1] floats (modalities.common.image_files)."""

import numpy as np
import pytest
from PIL import Image

from modalities.common.image_files import read_image


def gradient_16bit(path, height=32, width=64) -> np.ndarray:
    values = np.linspace(0, 65535, height * width).reshape(height, width).astype(np.uint16)
    Image.fromarray(values).save(path)
    return values / 65535


def test_a_16_bit_grey_gradient_loads_within_one_level_of_its_values(tmp_path):
    expected = gradient_16bit(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # pillow reads it as 16-bit
    pixels = read_image(tmp_path / "g16.png", channels=1).double().numpy()
    assert pixels.shape == (1, 32, 64)
    assert np.abs(pixels[0] - expected).max() < 1 / 255
    rgb = read_image(tmp_path / "g16.png", channels=3).double().numpy()
    assert np.abs(rgb - expected[None]).max() < 1 / 255
    rgba = read_image(tmp_path / "g16.png", channels=4).numpy()
    assert (rgba[3] == 1).all() and np.abs(rgba[:3] - expected[None]).max() < 1 / 255


def test_a_16_bit_image_resizes_in_full_precision(tmp_path):
    expected = gradient_16bit(tmp_path / "g16.png")
    pixels = read_image(tmp_path / "g16.png", channels=1, size=(16, 32)).double().numpy()
    halved = expected.reshape(16, 2, 32, 2).mean(axis=(1, 3))
    assert pixels.shape == (1, 16, 32) and np.abs(pixels[0] - halved).max() < 0.02
    assert abs(pixels.mean() - expected.mean()) < 1 / 255  # not clipped to white


@pytest.mark.parametrize("transparency", [False, True])
def test_a_palette_image_loads_its_colours(tmp_path, transparency):
    palette = [255, 0, 0, 0, 0, 255, 128, 128, 128] + [0] * (768 - 9)
    indices = np.array([[0, 1, 2, 0]], dtype=np.uint8).repeat(3, axis=0)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette)
    options = {"transparency": 1} if transparency else {}
    image.save(tmp_path / "p.png", **options)
    rgb = read_image(tmp_path / "p.png", channels=3).numpy()
    assert np.allclose(rgb[:, 0, :3].T, [[1, 0, 0], [0, 0, 1], [128 / 255] * 3])
    grey = read_image(tmp_path / "p.png", channels=1).numpy()
    assert np.allclose(grey[0, 0, :2], [76 / 255, 29 / 255], atol=1 / 255)  # ITU-R 601 luma of red, blue
    if transparency:
        assert np.allclose(read_image(tmp_path / "p.png", channels=4).numpy()[3, 0], [1, 0, 1, 1])
