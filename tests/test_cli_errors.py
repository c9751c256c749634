"""A user's mistakes through the `mmdit` command: one line `error: ...` naming the key, value, file or
shape at fault, exit status 2, no traceback (unless --debug), and no half-made run directory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from mmdit import cli
from mmdit.cli import main
from mmdit.errors import UserError
from mmdit.recipe import load_recipe
from mmdit.training.build import build
from mmdit.training.export import export_weights
from modalities.common.image_files import check_image

TINY = ["model.width=16", "model.heads=1", "model.joint_depth=0", "model.single_depth=1"]
FAST_FIT = [*TINY, "data.batch_size=16", "trainer.max_steps=2", "trainer.enable_progress_bar=false"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # Lightning's warnings may reach stderr too (pytest -p no:warnings): the message is one whole line.
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and not err.split(errors[0])[1].strip(), err
    return errors[0]


@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory) -> Path:
    _, module = build(load_recipe("image-digits", TINY))
    return export_weights(module, tmp_path_factory.mktemp("digits") / "w.safetensors")


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_steps=abc", "bad value for trainer.max_steps='abc' (expected int)"),
        ("trainer.max_steps=-5", "trainer.max_steps must be at least 1, got -5"),
        ("trainer.max_steps=0", "trainer.max_steps must be at least 1, got 0"),
        ("streams.image.options.patch_size=abc", "streams.image.options.patch_size='abc' (expected int)"),
        ("streams.image.options.size=[8,8,8]", "streams.image.options: image size (8, 8, 8) must be (H, W)"),
    ],
)
def test_bad_recipe_values_are_one_line_errors_naming_the_key(override, message, tmp_path, capsys):
    assert main(["fit", "image-digits", override, f"run_dir={tmp_path / 'run'}"]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_recipe_with_a_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nstreams: {image: {modality: image}\ndata: {source: digits}\n")
    assert main(["fit", str(path)]) == 2
    assert f"{path}:3:" in one_line_error(capsys)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--n", "0"], "argument --n: must be at least 1, got 0"),
        (["--n", "-3"], "argument --n: must be at least 1, got -3"),
        (["--n", "two"], "argument --n: 'two' is not an integer"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--cfg", "nan"], "argument --cfg: must be a finite number of at least 0, got nan"),
        (["--cfg", "inf"], "argument --cfg: must be a finite number of at least 0, got inf"),
        (["--cfg", "-1"], "argument --cfg: must be a finite number of at least 0, got -1"),
    ],
)
def test_sampling_numbers_are_checked_before_anything_loads(arguments, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", "never-read.safetensors", *arguments, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_generate_refuses_what_the_command_line_refuses(digits_weights):
    from mmdit.training.build import load_module

    module = load_module(digits_weights)
    for n, steps, cfg in ((0, 2, 1.0), (2, 0, 1.0), (2, 2, math.nan), (2, 2, -0.5)):
        with pytest.raises(UserError, match="sampling needs n >= 1, steps >= 1 and a finite cfg >= 0"):
            module.generate(n, steps=steps, cfg=cfg)


def test_non_finite_samples_are_an_error_naming_step_and_stream_and_write_nothing(
    digits_weights, tmp_path, capsys
):
    from mmdit.training.build import load_module

    module = load_module(digits_weights)
    with torch.no_grad():
        next(module.model.parameters()).fill_(math.inf)
    broken = export_weights(module, tmp_path / "diverged.safetensors")
    out = tmp_path / "out"
    assert main(["sample", str(broken), "--n", "2", "--steps", "3", "--out", str(out)]) == 2
    error = one_line_error(capsys)
    assert "sampling step 1 of 3: the prediction of stream 'image' is NaN or infinite" in error
    assert not out.exists()


def test_debug_shows_the_traceback_and_genuine_bugs_keep_theirs(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="trainer.max_steps must be at least 1"):
        main(["fit", "image-digits", "trainer.max_steps=0", "--debug"])
    with pytest.raises(UserError, match="trainer.max_steps must be at least 1"):
        main(["--debug", "fit", "image-digits", "trainer.max_steps=0"])

    def bug(args):
        raise RuntimeError("a bug in mmdit")

    monkeypatch.setattr(cli, "_recipes", bug)
    with pytest.raises(RuntimeError, match="a bug in mmdit"):
        main(["recipes"])


@pytest.mark.parametrize("broken", ["garbage", "truncated"])
def test_a_bad_image_in_a_folder_leaves_no_run_directory(broken, tmp_path, capsys):
    """Garbage is found by the header check before the run directory exists; a truncated file (a good
    header) when training reads it, and the new run's directory is removed."""
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    bad = tmp_path / "5.png"
    bad.write_bytes(b"\x89PNG not really" if broken == "garbage" else bad.read_bytes()[:60])
    if broken == "truncated":
        check_image(bad)  # its header passes: the run starts, and meets it at the first batch
    overrides = [*FAST_FIT, f"data.source.folder={tmp_path}", "streams.image.options.channels=1"]
    overrides += ["conditioning.labels=[]", "optimizer.warmup_steps=1"]
    assert main(["fit", "image-digits", *overrides, f"run_dir={tmp_path / 'run'}"]) == 2
    assert f"cannot read image {bad}" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def describer(tmp_path_factory) -> Path:
    _, module = build(load_recipe("unified-digits", TINY))
    return export_weights(module, tmp_path_factory.mktemp("unified") / "w.safetensors")


@pytest.mark.parametrize(
    "size, message",
    [
        ((8, 8), None),
        ((16, 16), "image of shape [1, 16, 16]; this model reads [1, 8, 8] (resize the file to [8, 8])"),
        ((13, 7), "image of shape [1, 13, 7]; this model reads [1, 8, 8]"),
    ],
)
def test_describe_names_a_file_of_another_size_with_both_shapes(describer, size, message, tmp_path, capsys):
    good, other = tmp_path / "good.png", tmp_path / "other.png"
    Image.new("L", (8, 8), 128).save(good)
    Image.new("L", size[::-1], 128).save(other)
    code = main(["describe", str(describer), str(good), str(other)])
    if message is None:
        assert code == 0 and capsys.readouterr().out.count("\n") == 2
        return
    assert code == 2
    error = one_line_error(capsys)
    assert str(other) in error and message in error


def test_a_shorter_clip_is_padded_and_masked_a_longer_one_named(tmp_path):
    from modalities.audio.adapter import AudioAdapter

    adapter = AudioAdapter(sample_rate=8000, seconds=1.0)
    half = np.sin(np.linspace(0, 200 * np.pi, 4000)).astype(np.float32) * 0.5
    soundfile.write(tmp_path / "half.wav", half, 8000)
    item = adapter.item(tmp_path / "half.wav")
    assert item["media"].shape == (1, 8000) and item["numbers"] == {"seconds": 0.5}
    assert torch.equal(item["media"][0, 4000:], torch.zeros(4000))
    np.testing.assert_allclose(item["media"][0, :4000].numpy(), half, atol=1 / 2**15)
    soundfile.write(tmp_path / "long.wav", np.zeros(12000, np.float32), 8000)
    with pytest.raises(
        ValueError, match=r"long.wav: audio of shape \[1, 12000\] \(1.500 s\); this model reads"
    ):
        adapter.item(tmp_path / "long.wav")


def test_the_cli_offers_exactly_the_objectives_samplers_and_schedules():
    from mmdit.objectives.build import OBJECTIVES
    from mmdit.objectives.guidance import SCALE_SCHEDULES

    assert sorted(cli.SAMPLERS) == sorted(s for o in OBJECTIVES.values() for s in o.samplers)
    assert sorted(cli.SCHEDULES) == sorted({s for o in OBJECTIVES.values() for s in o.schedules})
    assert cli.CFG_SCHEDULES == SCALE_SCHEDULES
