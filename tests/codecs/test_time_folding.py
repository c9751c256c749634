"""How a codec folds the time axis of clips: causal video codecs take 1 + k · ft frames and give 1 + k latent
frames; others fold time as space; a latent frame's first clip frame is what frame masks carry through."""

from __future__ import annotations

import pytest
import torch

from mmdit.codecs import AutoencoderConfig, CodecShape, TimeFolding, time_folding


@pytest.mark.parametrize(
    ("folding", "frames", "padded", "latent"),
    [
        (TimeFolding(4, True), 1, 1, 1),
        (TimeFolding(4, True), 5, 5, 2),
        (TimeFolding(4, True), 6, 9, 3),
        (TimeFolding(4, True), 8, 9, 3),
        (TimeFolding(4, False), 8, 8, 2),
        (TimeFolding(4, False), 5, 8, 2),
        (TimeFolding(1, False), 7, 7, 7),
    ],
)
def test_padded_and_latent_frames(folding: TimeFolding, frames: int, padded: int, latent: int) -> None:
    assert folding.padded_frames(frames) == padded
    assert folding.latent_frames(frames) == latent


def test_first_frames_of_latent_frames() -> None:
    latent = torch.arange(3)
    assert TimeFolding(4, True).first_frame(latent).tolist() == [0, 1, 5]
    assert TimeFolding(4, False).first_frame(latent).tolist() == [0, 4, 8]


def test_a_clip_needs_a_frame() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        TimeFolding(4, True).padded_frames(0)


def test_configs_without_a_time_factor_fold_time_as_space() -> None:
    conv = AutoencoderConfig(dims=3, channels=1, latent_channels=4, widths=(8, 8), strides=(2,), patch=2)
    assert time_folding(conv) == TimeFolding(4, False)
    assert time_folding(CodecShape(3, 3, 16, 8)) == TimeFolding(8, False)
    assert time_folding(CodecShape(3, 3, 16, 8, temporal_downsampling=4, causal=True)) == TimeFolding(4, True)


def test_padding_repeats_the_last_frame_up_to_the_frames_a_codec_takes() -> None:
    clips = torch.rand(2, 1, 6, 4, 4)
    padded = TimeFolding(4, True).pad(clips)
    assert padded.shape == (2, 1, 9, 4, 4)
    assert torch.equal(padded[:, :, :6], clips) and torch.equal(
        padded[:, :, 6:], clips[:, :, 5:6].expand(-1, -1, 3, -1, -1)
    )
    assert torch.equal(TimeFolding(4, True).pad(clips[:, :, :5]), clips[:, :, :5])
