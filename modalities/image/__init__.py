"""Images: pixels [C, H, W] in [0, 1] as p×p patch tokens in [-1, 1] with 2D positions, PNG files, the
scikit-learn digits (`modalities.common.digits`) or a folder of a user's images, and a classifier judge's
accuracy and Fréchet distance for evaluation."""

from modalities.image.adapter import ImageAdapter
from modalities.image.datasets import ImageFolder

__all__ = ["ImageAdapter", "ImageFolder"]
