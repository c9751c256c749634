"""`mmdit fit video-moving-digits` end to end with a tiny model: previews as frame strips and GIFs, samples
as MP4 files that PyAV reads back, and the moving-digits evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from mmdit.cli import main

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=2",
    "model.attention=factorised",
    "model.compile=false",  # the recipe compiles its blocks; compiled vs eager is tested on its own
    "data.batch_size=16",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=4",
    "trainer.enable_progress_bar=false",
    "sample.steps=2",
    "sample.grid=4",
    "optimizer.warmup_steps=3",
]


def decoded_frames(path: Path) -> list:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("video-run")
    assert main(["fit", "video-moving-digits", *TINY, f"run_dir={run_dir}"]) == 0
    return run_dir


def test_fit_writes_frame_strips_gifs_and_an_evaluation(run_dir):
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == [f"{n}.{s}" for n in ("final", "step_000006", "step_000012") for s in ("gif", "png")]
    frames = decoded_frames(run_dir / "samples" / "final.gif")
    # 4 clips asking for digits 0-3 in one row (a column per class), 32 px upscaled to 64-px cells with
    # 2-px borders, 8 frames.
    assert len(frames) == 8 and frames[0].shape == (66 + 2, 4 * 66 + 2)
    report = json.loads((run_dir / "eval.json").read_text())
    metrics = {"frame_digit_accuracy", "same_digit_share", "direction_accuracy", "samples"}
    assert set(report["generated"]) == set(report["reference"]) == metrics
    assert report["reference"]["direction_accuracy"] == 1.0 and report["reference"]["samples"] == 359
    # 12 steps of a 32-wide model cannot draw moving digits: the judge must see that.
    assert report["generated"]["frame_digit_accuracy"] < 0.5 < report["reference"]["frame_digit_accuracy"]


def test_sample_writes_mp4_clips_that_pyav_reads(run_dir, tmp_path):
    out = tmp_path / "clips"
    weights = run_dir / "weights.safetensors"
    assert main(["sample", str(weights), "--label", "digit=3", "--label", "direction=NE", "--n", "2",
                 "--steps", "2", "--out", str(out)]) == 0  # fmt: skip
    clips = sorted(out.glob("*.mp4"))
    assert [p.name for p in clips] == [f"video_digit-3_direction-NE_{i:03d}.mp4" for i in range(2)]
    for path in clips:
        frames = decoded_frames(path)
        assert len(frames) == 8 and frames[0].shape == (32, 32)
    assert (out / "video_digit-3_direction-NE_grid.gif").is_file()
