"""Exact resume (issue 26): a run interrupted mid-epoch and at an epoch's end, resumed into its run directory,
equals the uninterrupted run bit for bit on the CPU: every metrics.csv row (per-step losses, step labels),
the loss curve's history, the raw and EMA weights and the optimizer state. Also: last.ckpt is the last step's
and replaces a stale one, an extended cosine schedule is continuous, and another recipe's checkpoint is
refused with the keys that differ."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from mmdit.recipe import load_recipe
from mmdit.training.optim import LearningRateSchedule
from mmdit.training.resume import check_resume
from mmdit.training.train import train

# 1,438 training digits in batches of 256: epochs of 5 steps. Validation every 4 steps draws a preview grid,
# so previews and held-out losses run between the training steps of both runs.
TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=256",
    "trainer.max_steps=14",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "sample.steps=1",
    "sample.grid=4",
    "ema.decay=0.9",
    "optimizer.warmup_steps=3",
    "checkpoint.every_n_steps=1",
]
MID_EPOCH, EPOCH_END = 7, 10  # step 7 is the third batch of epoch 1; step 10 ends epoch 1


class Interrupted(Exception):
    pass


class InterruptAt(L.Callback):
    """Fails the run as a crash would, once `step` optimizer steps are done and their checkpoint is saved:
    at the start of the next batch, whose data is already loaded."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupted


def run(name: str, run_dir: Path, interruptions: list[int], *overrides: str) -> dict:
    """Train `name` into `run_dir`, interrupted after each of `interruptions` and resumed from last.ckpt;
    returns the final last.ckpt."""
    recipe = load_recipe(name, [*TINY, *overrides, f"run_dir={run_dir}"])
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = None
    for step in interruptions:
        with pytest.raises(Interrupted):
            train(recipe, resume, callbacks=[InterruptAt(step)])
        assert torch.load(last, weights_only=True)["global_step"] == step
        resume = str(last)
    train(recipe, resume)
    return torch.load(last, weights_only=True)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "logs" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("name", ["image-digits", "unified-digits"])
def test_a_run_interrupted_mid_epoch_and_at_an_epoch_end_resumes_bit_for_bit(name, tmp_path):
    whole = run(name, tmp_path / "whole", [])
    resumed = run(name, tmp_path / "resumed", [MID_EPOCH, EPOCH_END])
    assert whole["global_step"] == resumed["global_step"] == 14
    rows = metrics(tmp_path / "whole")
    assert [int(r["step"]) for r in rows if r["train/loss"]] == list(range(14))
    assert metrics(tmp_path / "resumed") == rows
    for part in ("state_dict", "current_model_state", "averaging_state"):  # EMA and raw weights
        assert_same_tensors(whole[part], resumed[part])
    assert_same_tensors(whole["optimizer_states"][0]["state"], resumed["optimizer_states"][0]["state"])
    curve = next(k for k in whole["callbacks"] if k.startswith("LossCurve"))
    assert_same_tensors(whole["callbacks"][curve], resumed["callbacks"][curve])
    assert len(whole["callbacks"][curve]["train"]) == 14 and (tmp_path / "resumed" / "loss.png").is_file()
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("last*")) == ["last.ckpt"]


def test_last_ckpt_holds_the_last_step_and_replaces_a_reused_run_directorys(tmp_path):
    quick = ["checkpoint.every_n_steps=1000", "trainer.limit_val_batches=0", f"run_dir={tmp_path}"]
    for steps in (4, 6):  # a second, fresh run into the same directory
        train(load_recipe("image-digits", [*TINY, *quick, f"trainer.max_steps={steps}"]))
        assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.ckpt"]
    assert [int(r["step"]) for r in metrics(tmp_path) if r["train/loss"]] == list(range(6))  # not appended


def test_an_extended_cosine_schedule_continues_from_the_resumed_learning_rate():
    schedule = LearningRateSchedule(warmup=2, decay="cosine", total=10)
    resumed_rate = schedule(6)
    schedule.extend(6, 20)
    assert schedule(6) == resumed_rate and schedule(1) == 1.0
    expected = [resumed_rate * 0.5 * (1 + math.cos(math.pi * (s - 6) / 14)) for s in range(6, 21)]
    assert [schedule(s) for s in range(6, 21)] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert schedule(20) == 0.0
    in_warmup = LearningRateSchedule(warmup=4, decay="cosine", total=10)
    in_warmup.extend(2, 20)
    assert in_warmup == LearningRateSchedule(warmup=4, decay="cosine", total=20)
    with pytest.raises(ValueError, match="reached learning rate 0 at step 10: the steps after 10"):
        LearningRateSchedule(warmup=2, decay="cosine", total=10).extend(10, 20)


class LearningRates(L.Callback):
    def __init__(self):
        self.rates: dict[int, float] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.rates[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]


def test_a_resumed_run_with_more_steps_re_lays_its_cosine_and_a_finished_one_is_refused(tmp_path):
    quick = ["trainer.limit_val_batches=0", "optimizer.lr=1e-3", f"run_dir={tmp_path}"]
    recipe = load_recipe("image-digits", [*TINY, *quick, "trainer.max_steps=8"])
    with pytest.raises(Interrupted):
        train(recipe, callbacks=[InterruptAt(5)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    rates = LearningRates()
    train(load_recipe("image-digits", [*TINY, *quick, "trainer.max_steps=12"]), str(last), [rates])
    resumed_rate = 1e-3 * LearningRateSchedule(3, "cosine", 8)(5)  # what the 8-step run trains step 5 at
    expected = {s: resumed_rate * 0.5 * (1 + math.cos(math.pi * (s - 5) / 7)) for s in range(5, 12)}
    assert rates.rates == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="reached learning rate 0 at step 12"):
        check_resume(load_recipe("image-digits", [*TINY, *quick, "trainer.max_steps=20"]), last)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    quick = ["trainer.max_steps=4", "trainer.limit_val_batches=0", "optimizer.decay=constant"]
    train(load_recipe("image-digits", [*TINY, *quick, f"run_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


def test_resume_accepts_the_same_recipe_with_other_run_keys(checkpoint, tmp_path):
    same = ["trainer.limit_val_batches=0", "optimizer.decay=constant", "trainer.max_steps=50"]
    run_keys = ["sample.steps=9", "checkpoint.every_n_steps=7", f"run_dir={tmp_path}", "data.num_workers=1"]
    assert check_resume(load_recipe("image-digits", [*TINY, *same, *run_keys]), checkpoint) == 4


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("image-digits", ["model.width=64"], r"differs in model\.width \(32 in the checkpoint, 64 now\);"),
        ("image-digits", ["optimizer.lr=0.01"], r"optimizer\.lr \(0\.001 in the checkpoint, 0\.01 now\)"),
        ("unified-digits", [], r"another recipe \(image-digits\): it differs in .* and \d+ more"),
    ],
)
def test_resume_refuses_another_recipes_checkpoint_naming_the_keys(checkpoint, name, overrides, message):
    recipe = load_recipe(name, [*TINY, "optimizer.decay=constant", *overrides])
    with pytest.raises(ValueError, match=message) as refused:
        check_resume(recipe, checkpoint)
    assert "\n" not in str(refused.value)


def test_resume_refuses_files_that_are_no_checkpoint(checkpoint, tmp_path):
    recipe = load_recipe("image-digits", [*TINY, "optimizer.decay=constant"])
    with pytest.raises(ValueError, match=r"weights\.safetensors: resuming needs a Lightning \.ckpt"):
        check_resume(recipe, tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt does not exist"):
        check_resume(recipe, tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*truncated\.ckpt: truncated"):
        check_resume(recipe, truncated)
