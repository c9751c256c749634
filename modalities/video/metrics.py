"""Judging moving-digit clips by tracking: the ink centroid of each frame gives the digit's track, the 8×8
crop around it goes to a digit classifier, and the first steps of the track give the direction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from modalities.common.judges import ClassifierJudge, frechet_distance

INK = 0.2  # pixel values below this are background (generated clips carry faint noise)
DIRECTION_STEPS = 2  # the track's first steps, free of bounces in the moving-digits data


def centroids(frames: Tensor) -> Tensor:
    """frames [..., H, W] in [0, 1] -> ink centroids [..., 2] as (row, col) in pixels; a frame without ink
    gets its centre."""
    h, w = frames.shape[-2:]
    ink = (frames.float() - INK).clamp_min(0)
    mass = ink.sum((-2, -1))
    rows = torch.arange(h, dtype=torch.float32)
    cols = torch.arange(w, dtype=torch.float32)
    centre = torch.stack([(ink.sum(-1) * rows).sum(-1), (ink.sum(-2) * cols).sum(-1)], -1)
    empty = mass[..., None] == 0
    return torch.where(
        empty, torch.tensor([(h - 1) / 2, (w - 1) / 2]), centre / mass[..., None].clamp_min(1e-8)
    )


def crops(frames: Tensor, centres: Tensor, size: int) -> Tensor:
    """frames [N, H, W], centres [N, 2] -> [N, size, size] windows centred (to the nearest pixel) on each
    centre; the canvas is zero-padded so a window never shifts at the walls."""
    padded = F.pad(frames.float(), (size, size, size, size))
    corner = (centres - (size - 1) / 2).round().long() + size
    return torch.stack(
        [f[r : r + size, c : c + size] for f, (r, c) in zip(padded, corner.tolist(), strict=True)]
    )


def start_directions(tracks: Tensor, directions: Sequence[tuple[int, int]]) -> Tensor:
    """tracks [B, T, 2] -> [B] index of the direction (dy, dx) closest in angle to the first steps'
    displacement; -1 when the digit does not move (less than half a pixel)."""
    displacement = tracks[:, DIRECTION_STEPS] - tracks[:, 0]
    units = F.normalize(torch.tensor(directions, dtype=torch.float32), dim=-1)
    best = (F.normalize(displacement, dim=-1) @ units.T).argmax(-1)
    return torch.where(displacement.norm(dim=-1) < 0.5, -1, best)


class MovingDigitJudge:
    """A digit classifier (`modalities.common.judges.ClassifierJudge`) trained on real 8×8 digits [N, 8, 8]
    with labels [N], each seen through the same centroid crop the tracker takes, so a real digit is judged
    exactly as it was in training wherever it moves. `canvas` is the clips' frame size."""

    def __init__(self, digits: Tensor, labels: np.ndarray, canvas: int) -> None:
        self.size, self.canvas = digits.shape[-1], canvas
        placed = F.pad(digits.float(), [(canvas - self.size) // 2, (canvas - self.size + 1) // 2] * 2)
        self.judge = ClassifierJudge(self._features(placed), np.asarray(labels))

    def _features(self, frames: Tensor) -> np.ndarray:
        """frames [N, H, W] -> flattened centroid crops [N, size*size]."""
        return rearrange(crops(frames, centroids(frames), self.size), "n h w -> n (h w)").numpy()

    def scores(
        self, clips: Tensor, digits: Tensor, directions: Tensor, compass: Sequence[tuple[int, int]]
    ) -> dict[str, float]:
        """clips [B, 1, T, H, W] in [0, 1] asked for `digits` [B] moving in `directions` [B] (indices into
        `compass`, (dy, dx) each) -> frame_digit_accuracy (share of frames whose crop shows the digit),
        same_digit_share (share of clips whose frames are all classified alike) and direction_accuracy."""
        frames = clips[:, 0].detach().float().cpu()
        b, t = frames.shape[:2]
        tracks = centroids(frames)
        flat = rearrange(frames, "b t h w -> (b t) h w")
        crop = crops(flat, rearrange(tracks, "b t a -> (b t) a"), self.size)
        predicted = self.judge.predict(rearrange(crop, "n h w -> n (h w)").numpy()).reshape(b, t)
        return {
            "frame_digit_accuracy": float(np.mean(predicted == digits.cpu().numpy()[:, None])),
            "same_digit_share": float(np.mean((predicted == predicted[:, :1]).all(1))),
            "direction_accuracy": float(
                (start_directions(tracks, compass) == directions.cpu()).float().mean()
            ),
            "samples": b,
        }


def clip_features(clips: Tensor) -> np.ndarray:
    """clips [B, C, T, H, W] -> [B, C*4*8*8]: each clip average-pooled to 4 × 8 × 8 (a coarse summary of
    appearance and motion that any clip size maps to)."""
    pooled = F.adaptive_avg_pool3d(clips.detach().float().cpu(), (4, 8, 8))
    return rearrange(pooled, "b c t h w -> b (c t h w)").numpy()


def motion(clips: Tensor) -> float:
    """Mean absolute change between consecutive frames of clips [B, C, T, H, W] (0 for still clips)."""
    return float((clips[:, :, 1:] - clips[:, :, :-1]).abs().mean())


def folder_scores(
    generated: Tensor,
    wanted: np.ndarray | None,
    train: tuple[Tensor, np.ndarray | None],
    heldout: tuple[Tensor, np.ndarray | None],
) -> dict[str, dict[str, float]]:
    """Scores for any clips: the Fréchet distance of pooled clip features to held-out clips, the mean
    frame-to-frame motion and, with class labels (`wanted` [B], the classes asked for), the accuracy of a
    ClassifierJudge trained on the train clips. The reference row scores held-out clips, with a train subset
    as large as the held-out split standing in for samples in the distance."""
    (train_clips, train_labels), (heldout_clips, heldout_labels) = train, heldout
    train_x, heldout_x = clip_features(train_clips), clip_features(heldout_clips)
    subset = np.random.default_rng(0).permutation(len(train_x))[: len(heldout_x)]
    rows = {
        "generated": {
            "frechet_distance": frechet_distance(clip_features(generated), heldout_x),
            "motion": motion(generated),
        },
        "reference": {
            "frechet_distance": frechet_distance(train_x[subset], heldout_x),
            "motion": motion(heldout_clips),
        },
    }
    if wanted is not None and train_labels is not None:
        judge = ClassifierJudge(train_x, train_labels)
        rows["generated"]["accuracy"] = judge.accuracy(clip_features(generated), wanted)
        rows["reference"]["accuracy"] = judge.accuracy(heldout_x, heldout_labels)
    rows["generated"]["samples"], rows["reference"]["samples"] = len(generated), len(heldout_clips)
    return rows
