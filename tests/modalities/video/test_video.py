"""The video adapter: exact tubelet round trips, 3D positions and RoPE, frame masks, the moving-digits data
and its judge, previews."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from mmdit.model.positions import apply_rope, rope_angles, rope_rotation, split_head_dim
from modalities import build_adapter
from modalities.common.digits import DigitsDataset
from modalities.video.adapter import VideoAdapter
from modalities.video.datasets import DIRECTIONS, ImageClips, MovingDigits, bounce, pad_frames
from modalities.video.frame_masks import frame_mask
from modalities.video.metrics import MovingDigitJudge, centroids, start_directions


def test_shapes_that_do_not_divide_are_named():
    with pytest.raises(ValueError, match="frames 7"):
        VideoAdapter(frames=7, tubelet=(2, 4, 4))
    with pytest.raises(ValueError, match=r"C=1"):
        VideoAdapter(channels=1).encode(torch.zeros(1, 3, 8, 32, 32))


def test_encode_decode_layout_and_stream():
    adapter = build_adapter("video", channels=3, tubelet=[2, 4, 4], size=[8, 12], frames=4)
    clips = torch.rand(2, 3, 4, 8, 12)
    tokens = adapter.encode(clips)
    assert tokens.x.shape == (2, 12, 96) and tokens.mask.all()
    assert tokens.x.min() >= -1 and tokens.x.max() <= 1
    assert (adapter.decode(tokens) - clips).abs().max() < 1e-6
    layout = adapter.layout(3)
    assert layout.x.shape == (3, 12, 96) and not layout.x.any() and torch.equal(layout.pos[0], tokens.pos[0])
    spec = adapter.stream("video")
    assert (spec.features, spec.positions, spec.axes) == (96, "rope", 3)


def test_frames_mask_padding_tubelets_and_images_are_one_frame_clips():
    adapter = VideoAdapter(channels=1, tubelet=(2, 4, 4), size=(8, 8), frames=8)
    digits = DigitsDataset("heldout")
    images = ImageClips(digits, frames=8)
    image_item = images[0]
    assert image_item["numbers"] == {"frames": 1.0} and image_item["labels"] == digits[0]["labels"]
    # The image fills frame 0 and, repeated, the rest of the clip.
    assert torch.equal(image_item["media"][:, 3], digits[0]["media"])
    short = pad_frames(torch.rand(1, 5, 8, 8), 8)
    assert torch.equal(short[:, 5], short[:, 4]) and torch.equal(short[:, 7], short[:, 4])
    media = torch.stack([image_item["media"], short, torch.rand(1, 8, 8, 8)])
    frames = torch.tensor([1.0, 5.0, 8.0])
    tokens = adapter.encode(media, {"frames": frames})
    # 4 tubelets in time (2 frames each), 4 in space: real while the tubelet starts on a real frame.
    real_tubelets = tokens.mask.reshape(3, 4, 4).all(-1)
    assert real_tubelets.tolist() == [[True, False, False, False], [True, True, True, False], [True] * 4]
    assert torch.equal(tokens.mask.reshape(3, 4, 4).any(-1), real_tubelets)
    assert torch.equal(adapter.layout(3, {"frames": frames}).mask, tokens.mask)
    with pytest.raises(ValueError, match="frames"):
        frame_mask(tokens.pos[..., 0] * 2, torch.tensor([0.0, 1.0, 2.0]))


def test_3d_rope_score_depends_only_on_offset_along_time():
    """A query and a key rotated by the video positions: their score depends only on the offset in t."""
    adapter = VideoAdapter(channels=1, tubelet=(1, 4, 4), size=(8, 8), frames=6)
    pos = adapter.layout(1).pos  # [1, 6*2*2, 3]
    head_dim = 24
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=g)
    axes_dim = split_head_dim(head_dim, 3)

    def score(p_q, p_k):
        rq = apply_rope(q, rope_rotation(rope_angles(p_q[None, None], axes_dim)))
        rk = apply_rope(k, rope_rotation(rope_angles(p_k[None, None], axes_dim)))
        return (rq * rk).sum()

    at = {tuple(p.int().tolist()): p for p in pos[0]}
    for offset in range(1, 4):
        scores = [score(at[(t + offset, 1, 0)], at[(t, 1, 0)]) for t in range(6 - offset)]
        for s in scores[1:]:
            assert_close(s, scores[0], atol=1e-5, rtol=1e-5)
    assert not torch.isclose(score(at[(2, 1, 0)], at[(0, 1, 0)]), score(at[(3, 1, 0)], at[(0, 1, 0)]))


def test_bounce_reflects_at_both_walls():
    assert bounce(np.array([0, 5, 24, 25, 30, 48, 49, -3]), 24).tolist() == [0, 5, 24, 23, 18, 0, 1, 3]


def test_moving_digits_are_deterministic_and_move_as_labelled():
    train, heldout = MovingDigits("train", clips_per_digit=2), MovingDigits("heldout")
    assert len(train) == 2 * 1438 and len(heldout) == 359
    assert MovingDigits.classes["direction"] == list(DIRECTIONS)
    again = MovingDigits("train", clips_per_digit=2)
    assert (
        torch.equal(train[100]["media"], again[100]["media"]) and train[100]["labels"] == again[100]["labels"]
    )
    item = heldout[7]
    clip = item["media"]
    assert clip.shape == (1, 8, 32, 32) and 0 <= clip.min() and clip.max() <= 1
    digit = DigitsDataset("heldout")[7]
    assert item["labels"]["digit"] == digit["labels"]["digit"]
    y, x = heldout.tracks[7, 3]
    assert torch.equal(clip[0, 3, y : y + 8, x : x + 8], digit["media"][0])
    assert clip[0, 3].sum() == digit["media"].sum()  # nothing else on the canvas
    steps = np.diff(heldout.tracks[:, :3], axis=1)  # the first two steps move with the label, no bounce
    expected = np.array(list(DIRECTIONS.values()))[heldout.directions][:, None]
    assert (np.sign(steps) == expected).all()


def test_judge_scores_real_clips_and_catches_a_wrong_direction_or_digit():
    train, heldout = MovingDigits("train", clips_per_digit=1), MovingDigits("heldout")
    judge = MovingDigitJudge(train.digits.images[:, 0], train.digits.labels.numpy(), train.canvas)
    compass = list(DIRECTIONS.values())
    items = [heldout[i] for i in range(120)]
    clips = torch.stack([item["media"] for item in items])
    digits = torch.tensor([item["labels"]["digit"] for item in items])
    directions = torch.tensor([item["labels"]["direction"] for item in items])
    real = judge.scores(clips, digits, directions, compass)
    assert real["frame_digit_accuracy"] > 0.9 and real["direction_accuracy"] == 1.0
    assert real["same_digit_share"] > 0.9 and real["samples"] == 120
    assert judge.scores(clips, digits, (directions + 4) % 8, compass)["direction_accuracy"] == 0.0
    assert judge.scores(clips, (digits + 1) % 10, directions, compass)["frame_digit_accuracy"] < 0.1
    # A still clip has no direction.
    still = clips[:, :, :1].expand(-1, -1, 8, -1, -1)
    assert (start_directions(centroids(still[:, 0]), compass) == -1).all()


def test_centroid_of_a_blob():
    frame = torch.zeros(1, 10, 10)
    frame[0, 2:4, 6:9] = 1.0
    assert_close(centroids(frame), torch.tensor([[2.5, 7.0]]))
    assert_close(centroids(torch.zeros(1, 10, 10)), torch.tensor([[4.5, 4.5]]))


def test_preview_writes_a_frame_strip_and_an_animated_gif(tmp_path):
    adapter = VideoAdapter(channels=1, tubelet=(2, 8, 8), size=(16, 16), frames=4)
    clips = torch.rand(3, 1, 4, 16, 16)
    path = adapter.preview(clips, tmp_path / "p" / "preview.png")
    with Image.open(path) as strip:
        # 3 rows of 4 frames, each cell upscaled to 64 px with 2 px borders.
        assert strip.size == (4 * 66 + 2, 3 * 66 + 2)
    with Image.open(path.with_suffix(".gif")) as gif:
        assert gif.n_frames == 4 and gif.size == (2 * 66 + 2, 2 * 66 + 2)


def test_unknown_dataset_and_wrong_shape_for_moving_digits():
    with pytest.raises(KeyError, match="moving-digits"):
        VideoAdapter().dataset("kinetics", "train")
    with pytest.raises(ValueError, match="channels: 1"):
        VideoAdapter(channels=3).dataset("moving-digits", "train")
