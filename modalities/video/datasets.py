"""Video datasets: the generated moving-digits clips (no download), a folder of a user's video files, and
images as one-frame clips so that an image dataset can be mixed into video training.

Items are `{"media": Tensor [C, T, H, W] float in [0, 1], "labels": {name: int}}`; datasets whose clips may
be shorter than T also carry `"numbers": {"frames": float}`, the count of real frames (the rest repeat the
last real frame and their tokens are masked).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from modalities.common.digits import DigitsDataset
from modalities.common.folders import MediaFolder
from modalities.video.files import VIDEO_SUFFIXES, read_video

# Compass directions in image coordinates (rows grow downwards, so "N" moves up): name -> (dy, dx).
DIRECTIONS = {
    "E": (0, 1),
    "NE": (-1, 1),
    "N": (-1, 0),
    "NW": (-1, -1),
    "W": (0, -1),
    "SW": (1, -1),
    "S": (1, 0),
    "SE": (1, 1),
}
SPEEDS = (1, 2, 3)  # pixels per frame along each moving axis
BOUNCE_FREE_STEPS = 2  # the first steps never touch a wall, so the start direction is visible in the clip


def pad_frames(clip: Tensor, frames: int) -> Tensor:
    """clip [C, T, H, W] -> [C, frames, H, W]: the first `frames` frames, the last one repeated to fill.

    Repeating (rather than zeros) keeps a tubelet that straddles the end a plausible still clip."""
    if clip.shape[1] == 0:
        raise ValueError(f"a clip needs at least one frame, got shape {tuple(clip.shape)}")
    clip = clip[:, :frames]
    missing = frames - clip.shape[1]
    return torch.cat([clip, clip[:, -1:].expand(-1, missing, -1, -1)], dim=1) if missing else clip


def bounce(position: np.ndarray, limit: int) -> np.ndarray:
    """Unbounded positions -> positions reflected at 0 and `limit` (a triangle wave of period 2·limit)."""
    folded = np.mod(position, 2 * limit)
    return np.where(folded <= limit, folded, 2 * limit - folded)


class MovingDigits(Dataset):
    """scikit-learn's 8×8 digits moving in straight lines, bouncing off the walls of a 32×32 canvas, over
    8 frames: media [1, 8, 32, 32] in [0, 1], labels {"digit": 0..9, "direction": 0..7 (E, NE, N, ...)}.

    Deterministic: clip i shows digit i mod D of the split (D digits; the digits' own fixed train / held-out
    split, so held-out clips show digits never seen in training) with a start position, direction and
    speed drawn from a generator seeded by (seed, split, i). The train split has `clips_per_digit` clips per
    digit, the held-out split one. Speeds are 1-3 px per frame along each moving axis; the first two steps
    never bounce, so the start direction is readable from the clip.

    `starts` [N, 2] and `velocities` [N, 2] (dy, dx) in pixels give each clip's trajectory.
    """

    canvas, frames = 32, 8
    classes = {"digit": [str(d) for d in range(10)], "direction": list(DIRECTIONS)}

    def __init__(self, split: str, clips_per_digit: int = 8, seed: int = 0) -> None:
        self.digits = DigitsDataset(split, seed)
        per_digit = clips_per_digit if split == "train" else 1
        count = len(self.digits) * per_digit
        limit = self.canvas - self.digits.images.shape[-1]
        self.directions = np.zeros(count, dtype=np.int64)
        self.starts = np.zeros((count, 2), dtype=np.int64)
        self.velocities = np.zeros((count, 2), dtype=np.int64)
        for i in range(count):
            rng = np.random.default_rng([seed, split == "train", i])
            self.directions[i] = rng.integers(len(DIRECTIONS))
            velocity = np.array(list(DIRECTIONS.values())[self.directions[i]]) * rng.choice(SPEEDS)
            # Starts from which the first steps stay inside [0, limit] on both axes.
            travel = BOUNCE_FREE_STEPS * velocity
            low, high = np.maximum(0, -travel), np.minimum(limit, limit - travel)
            self.starts[i] = rng.integers(low, high + 1)
            self.velocities[i] = velocity
        steps = np.arange(self.frames)[None, :, None]
        self.tracks = bounce(self.starts[:, None] + steps * self.velocities[:, None], limit)  # [N, T, 2]

    def __len__(self) -> int:
        return len(self.directions)

    def __getitem__(self, i: int) -> dict:
        digit = self.digits[i % len(self.digits)]
        image, size = digit["media"][0], digit["media"].shape[-1]
        clip = torch.zeros(1, self.frames, self.canvas, self.canvas)
        for t, (y, x) in enumerate(self.tracks[i]):
            clip[0, t, y : y + size, x : x + size] = image
        return {
            "media": clip,
            "labels": {"digit": digit["labels"]["digit"], "direction": int(self.directions[i])},
        }


class VideoFolder(MediaFolder):
    """Video files (and GIFs) under `root`, read with PyAV: media [channels, frames, H, W] in [0, 1] at
    `fps` frames per second and resized to `size`; longer files keep their first `frames` frames, shorter
    ones are padded (`numbers["frames"]` = real frames). Labels from sub-folders, as `MediaFolder`."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: tuple[int, int],
        frames: int,
        fps: float,
        channels: int = 3,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        label: str = "class",
    ) -> None:
        self.frames = frames
        read = partial(read_video, channels=channels, size=size, fps=fps, max_frames=frames)
        super().__init__(root, split, VIDEO_SUFFIXES, read, "video", heldout_fraction, seed, label)

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        real = min(item["media"].shape[1], self.frames)
        return {**item, "media": pad_frames(item["media"], self.frames), "numbers": {"frames": float(real)}}


class ImageClips(Dataset):
    """An image dataset as one-frame clips: media [C, frames, H, W] (the image, repeated as padding),
    numbers {"frames": 1.0}; labels and classes pass through. An image is a video of one frame."""

    def __init__(self, images: Dataset, frames: int) -> None:
        self.images, self.frames = images, frames
        self.classes = getattr(images, "classes", {})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = self.images[i]
        clip = pad_frames(item["media"][:, None], self.frames)
        return {**item, "media": clip, "numbers": {"frames": 1.0}}
