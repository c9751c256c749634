"""End to end through the `mmdit` command: fit -> export -> sample -> eval, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmdit.cli import main
from mmdit.training.build import load_module
from mmdit.training.export import export_weights

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=32",
    "trainer.max_steps=24",
    "trainer.val_check_interval=12",
    "trainer.log_every_n_steps=4",
    "trainer.enable_progress_bar=false",
    "sample.steps=2",
    "sample.grid=10",
    "ema.decay=0.9",
    "optimizer.warmup_steps=5",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert main(["fit", "image-digits", *TINY, f"run_dir={run_dir}"]) == 0
    return run_dir


def test_fit_writes_a_complete_run_directory(run_dir):
    for name in ("recipe.yaml", "weights.safetensors", "eval.json", "samples.png", "loss.png"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "logs" / "metrics.csv").read_text().count("\n") > 3
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "final.png",
        "step_000012.png",
        "step_000024.png",
    ]
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report) == {"recipe", "generated", "reference", "sampling"}
    # The recipe's Heun at sample.steps=2 calls the network 3 times, each guided (cfg 1.5): 6 NFE.
    assert report["sampling"]["nfe"] == 6 and report["sampling"]["schedule"] == "uniform"
    assert report["generated"]["samples"] == report["reference"]["samples"] == 359
    assert report["reference"]["accuracy"] > 0.95
    # 24 steps of a 32-wide model cannot draw digits: the judge must see that.
    assert report["generated"]["frechet_distance"] > 2 * report["reference"]["frechet_distance"]


def test_export_then_load_gives_identical_samples(run_dir, tmp_path):
    module = load_module(run_dir / "weights.safetensors")
    again = load_module(export_weights(module, tmp_path / "again.safetensors"))
    labels = {"digit": torch.arange(6)}
    assert torch.equal(
        module.generate(6, labels, seed=3)["image"], again.generate(6, labels, seed=3)["image"]
    )


def test_export_checkpoint_carries_the_ema_weights(run_dir, tmp_path):
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert main(["export", str(checkpoint), str(tmp_path / "w.safetensors")]) == 0
    exported = load_module(tmp_path / "w.safetensors")
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    # EMAWeightAveraging keeps the averaged weights in state_dict and the raw ones aside.
    assert "current_model_state" in stored
    for key, value in exported.model.state_dict().items():
        assert torch.equal(value, stored["state_dict"][f"model.{key}"]), key
    assert any(
        not torch.equal(stored["state_dict"][k], stored["current_model_state"][k])
        for k in stored["state_dict"]
    )


def test_resume_refuses_to_extend_a_cosine_that_has_reached_zero(run_dir, tmp_path, capsys):
    # Continuous resume of the 24-step cosine would train at learning rate 0 (tests/training/test_resume.py
    # resumes runs exactly); the refusal comes before a run directory is made.
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    overrides = [*TINY, "trainer.max_steps=30", f"run_dir={tmp_path / 'longer'}"]
    assert main(["fit", "image-digits", *overrides, "--resume", checkpoint]) == 2
    assert "reached learning rate 0 at step 24" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "longer").exists()


def test_sample_writes_pngs_of_the_requested_class(run_dir, tmp_path):
    out = tmp_path / "sevens"
    args = ["sample", str(run_dir / "weights.safetensors"), "--n", "4", "--label", "7", "--out", str(out)]
    assert main([*args, "--steps", "3"]) == 0
    files = sorted(out.glob("image_digit-7_*.png"))
    assert [f.name for f in files][:4] == [f"image_digit-7_{i:03d}.png" for i in range(4)]
    assert Image.open(files[0]).size == (8, 8)
    assert (out / "image_digit-7_grid.png").is_file()


def test_eval_json_prints_the_figures_of_eval_json(run_dir, capsys):
    assert main(["eval", str(run_dir / "weights.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    written = json.loads((run_dir / "eval.json").read_text())
    assert report["generated"] == written["generated"] and report["reference"] == written["reference"]
    assert main(["eval", str(run_dir / "weights.safetensors"), "--json", "--steps", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["sampling"]["steps"] == 3


def test_eval_judges_as_many_samples_as_asked_cycling_through_the_heldout_labels(run_dir, capsys):
    weights = str(run_dir / "weights.safetensors")
    assert main(["eval", weights, "--json", "--steps", "1", "--samples", "400"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["generated"]["samples"] == report["sampling"]["samples"] == 400
    assert report["reference"]["samples"] == 359  # the real rows stay the held-out split
    assert main(["eval", weights, "--samples", "0"]) == 2
    assert "argument --samples: must be at least 1, got 0" in capsys.readouterr().err


def test_sample_draws_another_size_through_the_layout(run_dir, tmp_path, capsys):
    weights, out = str(run_dir / "weights.safetensors"), tmp_path / "large"
    assert (
        main(["sample", weights, "--n", "2", "--steps", "1", "--layout", "size=16,12", "--out", str(out)])
        == 0
    )
    assert Image.open(out / "image_unconditional_000.png").size == (12, 16)
    assert main(["sample", weights, "--layout", "colour=red", "--out", str(out)]) == 2
    assert "layout takes no option colour; valid: ['size']" in capsys.readouterr().err


STUDENT = [
    "distill.trajectories=64",
    "data.batch_size=32",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "optimizer.warmup_steps=2",
    "sample.grid=10",
]


def test_a_student_distilled_from_the_fit_samples_in_two_steps(run_dir, tmp_path, capsys):
    teacher = run_dir / "weights.safetensors"
    student = tmp_path / "student"
    assert (
        main(["fit", "image-digits-turbo", f"distill.teacher={teacher}", *STUDENT, f"run_dir={student}"]) == 0
    )
    for name in ("recipe.yaml", "weights.safetensors", "eval.json", "samples.png", "trajectories.json"):
        assert (student / name).is_file(), name
    trajectories = json.loads((student / "trajectories.json").read_text())
    # DPM-Solver++(2M) at 16 steps, every call guided (the teacher's cfg 1.5): 32 NFE a trajectory.
    assert trajectories["teacher_nfe"] == 32 and trajectories["student_times"] == [1.0, 0.5, 0.0]
    assert (trajectories["train"], trajectories["heldout"]) == (64, 359)
    report = json.loads((student / "eval.json").read_text())
    assert report["sampling"]["nfe"] == 2 and report["sampling"]["sampler"] == "euler"
    assert report["sampling"]["cfg"] == 1.0
    # The student is the teacher's network, and an ordinary export.
    module = load_module(student / "weights.safetensors")
    assert module.recipe.model.width == 32 and module.recipe.distill.teacher == str(teacher)
    out = tmp_path / "twos"
    args = ["sample", str(student / "weights.safetensors"), "--label", "2", "--n", "3", "--out", str(out)]
    assert main([*args, "--steps", "2"]) == 0
    assert len(list(out.glob("image_digit-2_00*.png"))) == 3
    capsys.readouterr()
    assert main(["eval", str(student / "weights.safetensors"), "--json", "--steps", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["sampling"]["nfe"] == 2


def test_modalities_lists_the_builtins_with_their_options(capsys):
    assert main(["modalities"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("image", "audio", "latent", "mesh", "text", "video"))
    assert "built-in" in out and "patch_size=2" in out


def test_recipes_lists_the_bundled_ones(capsys):
    assert main(["recipes"]) == 0
    assert "image-digits" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "no-such-recipe"], "image-digits"),
        (["fit", "image-digits", "model.widht=3"], "model.widht"),
        (["fit", "image-digits", "streams.image.modality=smell"], "available: "),
        (["fit", "image-digits", "streams.image.options.patch=2"], "'patch'"),
        (["fit", "image-digits", "trainer.max_epoch=2"], "max_epoch"),
        (["sample", "missing.safetensors"], "missing.safetensors"),
        (["fit", "image-digits-turbo"], "give the teacher's export"),
        (
            ["fit", "image-digits-turbo", "distill.teacher=none.safetensors"],
            "none.safetensors does not exist",
        ),
    ],
)
def test_bad_input_is_a_clear_error(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_unknown_class_lists_the_valid_ones(run_dir, capsys):
    assert main(["sample", str(run_dir / "weights.safetensors"), "--label", "eleven"]) == 2
    assert "'0', '1'" in capsys.readouterr().err


def test_fit_on_a_folder_of_the_users_images(tmp_path):
    """README's "train on your own images": class sub-folders of RGB files, resized to the recipe's size."""
    rng = torch.Generator().manual_seed(0)
    for name, colour in (("red", 0), ("blue", 2)):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(24):
            pixels = torch.rand(12, 12, 3, generator=rng) * 60
            pixels[..., colour] += 180
            Image.fromarray(pixels.byte().numpy()).save(tmp_path / "images" / name / f"{i}.png")
    overrides = [*TINY, f"data.source.folder={tmp_path / 'images'}", "streams.image.options.channels=3"]
    overrides += ["conditioning.labels=[class]", "data.batch_size=16", f"run_dir={tmp_path / 'run'}"]
    assert main(["fit", "image-digits", *overrides]) == 0
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["reference"]["samples"] == 5  # 10% of 48 files, held out
    assert Image.open(tmp_path / "run" / "samples.png").mode == "RGB"


def test_only_launched_ranks_reuse_the_run_stamp(monkeypatch):
    from mmdit.recipe import load_recipe
    from mmdit.training.train import run_directory

    recipe = load_recipe("image-digits")
    monkeypatch.setenv("MMDIT_RUN_STAMP", "earlier-run")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert run_directory(recipe).name != "earlier-run"  # a second fit in one process gets its own folder
    monkeypatch.setenv("MMDIT_RUN_STAMP", "rank-zero-run")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_directory(recipe) == Path("runs/image-digits/rank-zero-run")


def test_fsdp_wraps_each_block_and_refuses_ema():
    from lightning.pytorch.strategies import FSDPStrategy

    from mmdit.model.blocks import JointBlock, SingleBlock
    from mmdit.recipe import load_recipe
    from mmdit.training.train import trainer_arguments

    with pytest.raises(ValueError, match="set ema.enabled=false"):
        trainer_arguments(load_recipe("image-digits", ["trainer.strategy=fsdp"]))
    arguments = trainer_arguments(load_recipe("image-digits", ["trainer.strategy=fsdp", "ema.enabled=false"]))
    strategy = arguments["strategy"]
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {JointBlock, SingleBlock}
    plain = trainer_arguments(load_recipe("image-digits", ["trainer.strategy=ddp"]))
    assert plain["strategy"] == "ddp"
