"""Image datasets: a folder of a user's own images. The other source, scikit-learn's bundled 8×8 digits, is
`modalities.common.digits.DigitsDataset`, as the video adapter draws on it too.

Both yield `{"media": Tensor [C, H, W] float in [0, 1], "labels": {name: int}}` and carry `classes`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from modalities.common.folders import MediaFolder
from modalities.common.image_files import IMAGE_SUFFIXES, check_image, pil_mode, read_image


class ImageFolder(MediaFolder):
    """Images under `root` read with pillow: media [channels, H, W] in [0, 1], resized to `size` = (H, W)
    when given. Labels as `MediaFolder`."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: tuple[int, int] | None = None,
        channels: int = 3,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        label: str = "class",
    ) -> None:
        pil_mode(channels)
        size = None if size is None else (int(size[0]), int(size[1]))
        super().__init__(
            root, split, IMAGE_SUFFIXES, partial(read_image, channels=channels, size=size), "image",
            heldout_fraction, seed, label, check_image,
        )  # fmt: skip
