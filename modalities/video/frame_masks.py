"""Which tokens of a batch of clips are real: clips of different lengths share a batch, padded to one length,
and a token is real when the first clip frame it covers is (a pixel tubelet's first frame, or the first frame
of a latent frame of a video codec)."""

from __future__ import annotations

import torch
from torch import Tensor


def frame_mask(first_frames: Tensor, frames: Tensor | None) -> Tensor:
    """Each token's first clip frame [B, N] and real frames per clip [B] (None: all real) -> mask [B, N]."""
    if frames is None:
        return torch.ones(first_frames.shape, dtype=torch.bool, device=first_frames.device)
    frames = torch.as_tensor(frames, device=first_frames.device)
    if frames.shape != first_frames.shape[:1] or bool((frames < 1).any()):
        raise ValueError(
            f"numbers['frames'] must be [B={first_frames.shape[0]}] counts >= 1, got {frames.tolist()}"
        )
    return first_frames < frames[:, None]
