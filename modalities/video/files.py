"""Video files: MP4 (H.264) and WebM (VP9) through PyAV, animated GIF through pillow, and a folder of
numbered PNG frames. Clips are float [C, T, H, W] in [0, 1] with C = 1 (gray) or 3 (RGB).

Frame rate: `read_video(..., fps=r)` resamples in time by picking, for each instant k / r, the latest frame
shown at that instant (frames are repeated or dropped, never blended); `fps=None` keeps every decoded frame.
A folder of frames has no timing, so its frames are taken one per step. Size: `size=(H, W)` resizes every
frame (bilinear, antialiased); None keeps the file's size. Writing uses one constant frame rate.
H.264 / VP9 store 4:2:0 chroma at quality CRF 10: gray clips come back within a few levels of 255, colour
loses some chroma detail; GIF stores 256 colours per frame (exact for gray).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image, ImageSequence, UnidentifiedImageError
from torch import Tensor

from modalities.common.image_files import IMAGE_SUFFIXES, read_image

CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9"}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif")
CRF = "10"
AV_FORMATS = {1: "gray", 3: "rgb24"}


def _check_channels(channels: int) -> None:
    if channels not in AV_FORMATS:
        raise ValueError(f"video files hold 1 (gray) or 3 (RGB) channels, got channels={channels}")


def _to_uint8(clip: Tensor) -> np.ndarray:
    """[C, T, H, W] in [0, 1] -> uint8 [T, H, W, C]."""
    if clip.ndim != 4:
        raise ValueError(f"a clip must be [C, T, H, W], got shape {tuple(clip.shape)}")
    _check_channels(clip.shape[0])
    pixels = (clip.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return rearrange(pixels, "c t h w -> t h w c").numpy()


def _resample(frames: list[np.ndarray], times: list[float], fps: float | None) -> list[np.ndarray]:
    """Frames shown from `times` (seconds, ascending) -> the frame on screen at each instant k / fps."""
    if fps is None or not frames:
        return frames
    end = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1 / fps)
    instants = np.arange(0, end - times[0] - 1e-9, 1 / fps) + times[0]
    picks = np.searchsorted(np.asarray(times), instants + 1e-6, side="right") - 1
    return [frames[i] for i in np.clip(picks, 0, len(frames) - 1)]


def _clip(frames: list[np.ndarray], channels: int, size: tuple[int, int] | None) -> Tensor:
    """uint8 frames [H, W] or [H, W, C] -> float [C, T, H, W] in [0, 1], resized to `size` if given."""
    array = np.stack([f if f.ndim == 3 else f[:, :, None] for f in frames])
    clip = rearrange(torch.from_numpy(array).float() / 255.0, "t h w c -> c t h w")
    if size is not None and tuple(clip.shape[-2:]) != tuple(size):
        clip = F.interpolate(clip, size=tuple(size), mode="bilinear", antialias=True).clamp(0, 1)
    return clip.contiguous()


def _read_av(path: Path, channels: int) -> tuple[list[np.ndarray], list[float]]:
    frames, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format=AV_FORMATS[channels]))
            times.append(float(frame.time if frame.time is not None else len(times)))
    return frames, times


def _read_gif(path: Path, channels: int) -> tuple[list[np.ndarray], list[float]]:
    frames, times, clock = [], [], 0.0
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as image:
        for frame in ImageSequence.Iterator(image):
            frames.append(np.asarray(frame.convert(mode)))
            times.append(clock)
            clock += frame.info.get("duration", 100) / 1000.0  # GIF's default delay is 100 ms
    return frames, times


def _read_frame_folder(path: Path, channels: int) -> list[np.ndarray]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"frame folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    frames = [read_image(f, channels) for f in files]
    return [(rearrange(f, "c h w -> h w c") * 255).round().to(torch.uint8).numpy() for f in frames]


def read_video(
    path: str | Path,
    channels: int = 3,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> Tensor:
    """A video file, GIF or folder of frames -> float [channels, T, H, W] in [0, 1] (see the module
    docstring for `fps` and `size`); at most `max_frames` frames from the start."""
    path = Path(path)
    _check_channels(channels)
    if not path.exists():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        if path.is_dir():
            frames = _read_frame_folder(path, channels)
        else:
            reader = _read_gif if path.suffix.lower() == ".gif" else _read_av
            frames = _resample(*reader(path, channels), fps)
    except (av.FFmpegError, UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read video {path}: {err}") from err
    if not frames:
        raise ValueError(f"video {path} has no frames")
    return _clip(frames[:max_frames], channels, size)


def write_video(clip: Tensor, path: str | Path, fps: float) -> Path:
    """clip [C, T, H, W] in [0, 1] -> `path`: .mp4 (H.264) or .webm (VP9) with PyAV, .gif with pillow, or
    a folder of PNG frames (frame_00000.png, ...) when `path` has no suffix. Returns the path."""
    path = Path(path)
    pixels = _to_uint8(clip)
    suffix = path.suffix.lower()
    if suffix == "":
        path.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(pixels):
            Image.fromarray(frame[:, :, 0] if frame.shape[-1] == 1 else frame).save(
                path / f"frame_{t:05d}.png"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(f[:, :, 0] if f.shape[-1] == 1 else f) for f in pixels]
        # GIF delays count hundredths of a second, so 8 fps is stored as 120 or 130 ms.
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    if suffix not in CODECS:
        raise ValueError(f"{path}: cannot write {suffix!r} videos; use .mp4, .webm, .gif or a folder")
    height, width = pixels.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"{path}: 4:2:0 video needs even height and width, got {height}×{width}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[suffix], rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": CRF, "b": "0"} if suffix == ".webm" else {"crf": CRF}
        fmt = AV_FORMATS[pixels.shape[-1]]
        for frame in pixels:
            image = frame[:, :, 0] if fmt == "gray" else frame
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)))
        container.mux(stream.encode())
    return path
