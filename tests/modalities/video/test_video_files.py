"""Video files: PyAV (MP4, WebM) and pillow (GIF) write -> read round trips, frame folders, frame-rate
resampling, the folder dataset (a short clip's padding masked through a real batch) and the errors a user
meets."""

import av
import pytest
import torch

from mmdit.recipe import load_recipe
from mmdit.training.train import build
from modalities.video.adapter import VideoAdapter
from modalities.video.datasets import VideoFolder
from modalities.video.files import read_video, write_video


def moving_square(channels: int, frames: int = 6, size: int = 16) -> torch.Tensor:
    """A bright square moving right on a dark background: [C, T, H, W] in [0, 1], 8-bit levels."""
    clip = torch.full((channels, frames, size, size), 16 / 255)
    for t in range(frames):
        clip[:, t, 4:10, t : t + 6] = 224 / 255
    if channels == 3:
        clip[1] *= 0.5  # a colour, not gray
    return (clip * 255).round() / 255


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
@pytest.mark.parametrize("channels", [1, 3])
def test_pyav_round_trip(tmp_path, suffix, channels):
    clip = moving_square(channels)
    path = write_video(clip, tmp_path / f"clip{suffix}", fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (16, 16, 8)
    back = read_video(path, channels)
    assert back.shape == clip.shape
    # Lossy codecs at CRF 10: the mean error is a fraction of one 8-bit level for gray, a few for colour.
    error = (back - clip).abs()
    assert error.mean() < (1.5 if channels == 1 else 6) / 255, error.mean() * 255
    assert error.max() < 0.25


@pytest.mark.parametrize("channels", [1, 3])
def test_gif_round_trip(tmp_path, channels):
    clip = moving_square(channels)
    path = write_video(clip, tmp_path / "clip.gif", fps=10)
    back = read_video(path, channels)
    if channels == 1:
        assert torch.equal(back, clip)  # 256 gray levels fit a GIF palette exactly
    else:
        assert back.shape == clip.shape and (back - clip).abs().max() < 8 / 255
    # PyAV reads the same GIF.
    assert torch.equal(read_video(path, channels, fps=10), back) or channels == 3
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_frame_folder_round_trip_is_exact(tmp_path):
    clip = moving_square(3)
    folder = write_video(clip, tmp_path / "frames", fps=8)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["frame_00000.png", "frame_00001.png"]
    assert torch.equal(read_video(folder, 3), clip)


def test_frame_rate_and_size_handling(tmp_path):
    clip = torch.stack([torch.full((1, 8, 8), t / 7) for t in range(8)], dim=1)  # frame t has value t/7
    clip = (clip * 255).round() / 255
    path = write_video(clip, tmp_path / "ramp.gif", fps=8)
    half = read_video(path, 1, fps=4)  # every second frame
    assert half.shape[1] == 4 and torch.equal(half[0, :, 0, 0], clip[0, ::2, 0, 0])
    double = read_video(path, 1, fps=16)  # every frame twice
    assert double.shape[1] == 16 and torch.equal(double[0, ::2, 0, 0], clip[0, :, 0, 0])
    small = read_video(path, 1, size=(4, 6), max_frames=3)
    assert small.shape == (1, 3, 4, 6)


def test_unreadable_files_are_named(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        read_video(broken)
    with pytest.raises(FileNotFoundError, match="missing.gif"):
        read_video(tmp_path / "missing.gif")
    with pytest.raises(ValueError, match="even"):
        write_video(torch.rand(1, 2, 5, 6), tmp_path / "odd.mp4", fps=8)
    with pytest.raises(ValueError, match=".avi"):
        write_video(torch.rand(1, 2, 4, 4), tmp_path / "x.avi", fps=8)


def test_video_folder_labels_padding_and_adapter_files(tmp_path):
    adapter = VideoAdapter(channels=1, tubelet=(2, 4, 4), size=(8, 8), frames=4, fps=8)
    for i in range(3):
        adapter.save(moving_square(1, frames=6), tmp_path / "right" / f"{i}.mp4")
        adapter.save(moving_square(1, frames=2).flip(-1), tmp_path / "left" / f"{i}.gif")
    train = VideoFolder(tmp_path, "train", size=(8, 8), frames=4, fps=8, channels=1, heldout_fraction=0.34)
    heldout = VideoFolder(
        tmp_path, "heldout", size=(8, 8), frames=4, fps=8, channels=1, heldout_fraction=0.34
    )
    assert len(train) == 4 and len(heldout) == 2 and train.classes == {"class": ["left", "right"]}
    assert not set(train.files) & set(heldout.files)
    assert len(adapter.dataset({"folder": str(tmp_path)}, "train")) == 5  # 10% held out, at least one
    for item in [train[i] for i in range(len(train))]:
        assert item["media"].shape == (1, 4, 8, 8)
        long = item["labels"]["class"] == 1
        assert item["numbers"] == {"frames": 4.0 if long else 2.0}
        if not long:  # padded by repeating the last real frame
            assert torch.equal(item["media"][:, 3], item["media"][:, 1])
    loaded = adapter.load(tmp_path / "right" / "0.mp4")
    assert loaded.shape == (1, 6, 16, 16)
    # A folder has no digit judge: clips are scored by pooled-feature distance, motion and class accuracy.
    noise = torch.rand(2, 1, 4, 8, 8)
    report = adapter.evaluate(noise, {"class": torch.tensor([0, 1])}, train, heldout)
    generated, reference = report["generated"], report["reference"]
    assert set(generated) == set(reference) == {"frechet_distance", "motion", "accuracy", "samples"}
    assert generated["motion"] > 3 * reference["motion"] and reference["motion"] > 0
    assert generated["frechet_distance"] > reference["frechet_distance"]


TINY = [
    "streams.video.options.channels=1",
    "streams.video.options.tubelet=[2,4,4]",
    "streams.video.options.size=[8,8]",
    "streams.video.options.frames=4",
    "model.width=32",
    "model.heads=2",
    "model.single_depth=2",
    "data.batch_size=4",
    "model.compile=false",  # the recipe compiles its blocks; compiled vs eager is tested on its own
    "conditioning.labels=[class]",
]


def test_a_short_folder_clip_has_its_padding_masked_through_a_real_batch(tmp_path):
    adapter = VideoAdapter(channels=1, tubelet=(2, 4, 4), size=(8, 8), frames=4, fps=8)
    for i in range(3):
        adapter.save(moving_square(1, frames=6, size=8), tmp_path / "long" / f"{i}.gif")
        adapter.save(moving_square(1, frames=2, size=8), tmp_path / "short" / f"{i}.gif")
    recipe = load_recipe("video-moving-digits", [*TINY, f"data.source.folder={tmp_path}"])
    datamodule, module = build(recipe)
    torch.manual_seed(0)
    batch = next(iter(datamodule.train_dataloader()))
    frames = batch["numbers"]["frames"]
    short = batch["labels"]["class"] == datamodule.classes["class"].index("short")
    assert short.any() and (~short).any()  # 4 of the 5 train clips: both lengths in the batch
    assert torch.equal(frames, torch.where(short, 2.0, 4.0).to(frames.dtype))

    mask = module.adapters["video"].encode(batch["media"], batch["numbers"]).mask  # [B, 2 × 2 × 2]
    assert torch.equal(mask[:, :4].all(1), torch.ones(4, dtype=torch.bool))  # first 2-frame tubelets
    assert torch.equal(mask[:, 4:].any(1), ~short)  # second ones: real only in the long clips

    def loss(media: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return module.task_losses({**batch, "media": media}, module.tasks[0], 0.0, generator)["diffusion"]

    module.eval()
    padded = batch["media"].clone()
    padded[short, :, 2:] = torch.rand_like(padded[short, :, 2:])  # padding: loss and attention ignore it
    assert torch.allclose(loss(padded), loss(batch["media"]), rtol=1e-6, atol=1e-7)
    real = batch["media"].clone()
    real[short, :, :2] = torch.rand_like(real[short, :, :2])  # real frames of the same clips do count
    assert not torch.allclose(loss(real), loss(batch["media"]), rtol=1e-3)
