"""Video: clips [C, T, H, W] in [0, 1] as spacetime tubelets with 3D positions, shorter clips padded and
masked, MP4 / WebM / GIF files and frame folders, the generated moving digits, a folder of a user's videos or
images as one-frame clips, and a tracking judge (digit and direction) for evaluation."""

from modalities.video.adapter import VideoAdapter
from modalities.video.causal_codec import CausalVideoCodec, CausalVideoConfig
from modalities.video.datasets import ImageClips, MovingDigits, VideoFolder
from modalities.video.files import read_video, write_video

__all__ = [
    "CausalVideoCodec",
    "CausalVideoConfig",
    "ImageClips",
    "MovingDigits",
    "VideoAdapter",
    "VideoFolder",
    "read_video",
    "write_video",
]
