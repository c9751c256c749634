"""Video as spacetime patches (Sora, CogVideoX, Latte): a clip [C, T, H, W] in [0, 1] becomes tubelets of
pt × ph × pw pixels in [-1, 1], one token each, with the tubelet's (t, h, w) as its position for 3D RoPE.

An image is a one-frame video, and clips of different lengths share a batch: media are padded to the
adapter's `frames`, and `numbers["frames"]` [B] (real frames per clip) masks the tokens of padding tubelets.
With `codec` the tubelets are cells of a frozen video codec's latents instead
(`modalities/video/codec_tokenizer.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import ModalityAdapter, StreamSpec, Tokens
from modalities.common.folders import folder_source
from modalities.common.grids import grid_image, to_pil
from modalities.common.patches import grid_positions, patchify, unpatchify
from modalities.common.splits import SPLITS
from modalities.video.codec_tokenizer import VideoCodecTokenizer
from modalities.video.datasets import DIRECTIONS, MovingDigits, VideoFolder
from modalities.video.files import VIDEO_SUFFIXES, read_video, write_video
from modalities.video.frame_masks import frame_mask
from modalities.video.metrics import MovingDigitJudge, folder_scores

INK_WEIGHT = 10.0  # a codec's loss counts a value of the digit this many times over one of the blank canvas


class VideoAdapter(ModalityAdapter):
    """Clips [B, C, T, H, W] in [0, 1] as tokens x [B, (T/pt)(H/ph)(W/pw), pt*ph*pw*C] in [-1, 1] with
    positions (t, h, w) in tubelets, for 3D RoPE.

    `frames` and `size` = (H, W) are the clip shape that sampling lays out and folder datasets are cut and
    resized to; `fps` is the rate files are written at and folder videos are resampled to. `codec` = PATH
    (a video codec export, e.g. a `causal-video` codec stage's codec.safetensors): tokens carry its
    normalised latents in tubelets of `tubelet` latent cells (`VideoCodecTokenizer`); files, previews,
    datasets and evaluation stay in pixels, and `encoding_identity` is the codec's digest.
    """

    name = "video"
    file_suffix = ".mp4"
    read_suffixes = VIDEO_SUFFIXES

    def __init__(
        self,
        channels: int = 3,
        tubelet: tuple[int, int, int] | list[int] = (2, 4, 4),
        size: tuple[int, int] | list[int] = (32, 32),
        frames: int = 8,
        fps: float = 8.0,
        codec: str | None = None,
    ) -> None:
        if len(tubelet) != 3 or len(size) != 2:
            raise ValueError(f"video tubelet must be (pt, ph, pw) and size (H, W); got {tubelet}, {size}")
        self.channels, self.frames, self.fps = channels, int(frames), float(fps)
        self.tubelet = tuple(int(p) for p in tubelet)
        self.size = (int(size[0]), int(size[1]))
        self.codec = None
        if codec is not None:
            self.codec = VideoCodecTokenizer(codec, self.channels, self.tubelet, self.size, self.frames)
        elif (
            self.frames % self.tubelet[0] or self.size[0] % self.tubelet[1] or self.size[1] % self.tubelet[2]
        ):
            raise ValueError(
                f"video frames {self.frames} and size {list(self.size)} must be divisible by the tubelet "
                f"{list(self.tubelet)}"
            )

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tubelets along (t, h, w) of a full clip (of latent cells, with a codec)."""
        if self.codec is not None:
            return self.codec.grid
        return tuple(n // p for n, p in zip((self.frames, *self.size), self.tubelet, strict=True))

    @property
    def features(self) -> int:
        """Values per token: pt * ph * pw * C pixels (pt * ph * pw * D latents, with a codec)."""
        if self.codec is not None:
            return self.codec.features
        return self.channels * math.prod(self.tubelet)

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.features, positions="rope", axes=3)

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Clips [B, C, T, H, W] in [0, 1] -> Tokens(x [B, N, pt*ph*pw*C] in [-1, 1], pos [B, N, 3], mask);
        `numbers["frames"]` [B] masks the tubelets that start after each clip's real frames."""
        if media.ndim != 5 or media.shape[1] != self.channels:
            raise ValueError(f"clips must be [B, C={self.channels}, T, H, W], got {tuple(media.shape)}")
        if self.codec is not None:
            return self.codec.encode(media, (numbers or {}).get("frames"))
        x, pos = patchify(media * 2 - 1, self.tubelet)
        return Tokens(x, pos, frame_mask(pos[..., 0] * self.tubelet[0], (numbers or {}).get("frames")))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens -> clips [B, C, T, H, W] in [0, 1] (clamped: a sampler's output may overshoot); padding
        tubelets are decoded too, the caller trims with its frame counts."""
        if self.codec is not None:
            return self.codec.decode(tokens)
        clips = unpatchify(tokens.x, tokens.pos, self.tubelet, self.channels)
        return ((clips + 1) / 2).clamp(0, 1)

    def layout(self, batch_size: int, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Zeros x [B, N, F] and positions for clips of the adapter's frames and size; `numbers["frames"]`
        [B] asks for shorter clips (their padding tubelets are masked)."""
        if self.codec is not None:
            return self.codec.layout(batch_size, (numbers or {}).get("frames"))
        pos = grid_positions(self.grid, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.features)
        return Tokens(x, pos, frame_mask(pos[..., 0] * self.tubelet[0], (numbers or {}).get("frames")))

    def encoding_identity(self) -> dict[str, Any]:
        """{"codec": sha256 of the codec} with a codec (tokens cached under another codec are stale)."""
        return {} if self.codec is None else self.codec.identity()

    def reconstruction_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """A codec stage's loss between clips [B, C, T, H, W] in [0, 1]: the mean absolute error with every
        inked value (target > 0) weighted `INK_WEIGHT` times a blank one. A moving digit covers 6% of its
        canvas; unweighted, a codec first learns the blank canvas and the digits' strokes come last."""
        weight = 1 + (INK_WEIGHT - 1) * (target > 0).to(prediction.dtype)
        return (weight * (prediction - target).abs()).sum() / weight.sum()

    def codec_values(self, media: Tensor) -> Tensor:
        """Clips in [0, 1] -> [-1, 1], what `VideoCodecTokenizer` feeds a codec (and video VAEs expect)."""
        return media * 2 - 1

    def codec_media(self, values: Tensor) -> Tensor:
        return (values + 1) / 2

    def load(self, path: str | Path) -> Tensor:
        """A video file, GIF or folder of frames -> [C, T, H, W] in [0, 1] at the adapter's fps (frames
        repeated or dropped) and the file's own size and length."""
        return read_video(path, self.channels, fps=self.fps)

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, T, H, W] in [0, 1] -> .mp4 / .webm (PyAV), .gif (pillow) or a folder of PNG frames
        (a path without suffix), at the adapter's fps."""
        return write_video(item, path, self.fps)

    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """media [B, C, T, H, W] -> a PNG frame strip at `path` (one row per clip, time left to right) and
        beside it an animated GIF of the clips in a square grid, both upscaled (nearest) to >= 64 px cells."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        media = media.detach().float().cpu()
        b, _, t = media.shape[:3]
        strip = grid_image(rearrange(media, "b c t h w -> (b t) c h w"), cols=t)
        to_pil(strip).save(path, format="PNG")
        frames = torch.stack([grid_image(media[:, :, i], columns) for i in range(t)], dim=1)
        write_video(frames, path.with_suffix(".gif"), self.fps)
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """Source "moving-digits" (generated; needs channels=1, size=(32, 32), frames=8) or
        {"folder": PATH, "label": NAME} of video files (cut / padded to `frames`, resized to `size`, at
        `fps`); `seed` draws the split and the generated motion."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if source == "moving-digits":
            shape = (MovingDigits.canvas, MovingDigits.canvas)
            if (self.channels, self.size, self.frames) != (1, shape, MovingDigits.frames):
                raise ValueError(
                    "moving-digits clips are 1×8×32×32; set channels: 1, size: [32, 32], frames: 8 (got "
                    f"channels: {self.channels}, size: {list(self.size)}, frames: {self.frames})"
                )
            return MovingDigits(split, seed=seed)
        folder = folder_source(source, "video", bundled=["moving-digits"])
        return VideoFolder(
            folder.path, split, self.size, self.frames, self.fps, self.channels, seed=seed, label=folder.label
        )

    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """Moving digits: per-frame digit accuracy of a digit judge on the tracked crop, the share of clips
        whose digit stays the same, and the start direction read from the centroid track; the reference row
        scores the held-out clips (real digits never seen in training). Other data (a folder of videos):
        `folder_scores` (Fréchet distance of pooled clips, motion, and class accuracy when labelled)."""
        real = [heldout[i] for i in range(len(heldout))]
        clips = torch.stack([item["media"] for item in real])
        if not isinstance(train, MovingDigits):
            key = next((k for k in getattr(train, "classes", {}) if k in labels), None)
            train_items = [train[i] for i in range(len(train))]
            train_clips = torch.stack([item["media"] for item in train_items])
            if key is None:
                return folder_scores(generated, None, (train_clips, None), (clips, None))
            train_labels = np.array([item["labels"][key] for item in train_items])
            heldout_labels = np.array([item["labels"][key] for item in real])
            wanted = labels[key].cpu().numpy()
            return folder_scores(generated, wanted, (train_clips, train_labels), (clips, heldout_labels))
        for key in ("digit", "direction"):
            if key not in labels:
                raise KeyError(f"evaluate needs the requested {key!r} labels; got {sorted(labels)}")
        judge = MovingDigitJudge(train.digits.images[:, 0], train.digits.labels.numpy(), train.canvas)
        compass = list(DIRECTIONS.values())
        digits = torch.tensor([item["labels"]["digit"] for item in real])
        directions = torch.tensor([item["labels"]["direction"] for item in real])
        return {
            "generated": judge.scores(generated, labels["digit"], labels["direction"], compass),
            "reference": judge.scores(clips, digits, directions, compass),
        }
