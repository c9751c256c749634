"""The student: its targets pair each recorded state with the next, a teacher sampled by the student's own
Euler steps is already a perfect student, distillation lowers the loss of a guided teacher's trajectories,
and recipes it cannot train are refused by name."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.testing import assert_close
from torch.utils.data import default_collate

from mmdit.recipe import load_recipe
from mmdit.training import build as run_builder
from mmdit.training.distill_module import DistillModule, euler_targets

SMALL = ["distill.trajectories=64", "data.batch_size=32"]


def build(teacher, *overrides: str):
    recipe = load_recipe("image-digits-turbo", [f"distill.teacher={teacher}", *SMALL, *overrides])
    data, student = run_builder.build(recipe)
    data.setup("fit")
    return data, student


def first_batch(data) -> dict:
    dataset = data.trajectories["heldout"]
    return default_collate([dataset[i] for i in range(32)])


def test_euler_targets_pair_each_state_with_the_next_item_by_item():
    states = (
        torch.arange(2 * 3, dtype=torch.float64).reshape(2, 3, 1, 1).expand(2, 3, 4, 2)
    )  # item b, k: 3b + k
    times = torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64)
    x, t, velocity = euler_targets(states, times)
    assert x[:, 0, 0].tolist() == [0, 1, 3, 4] and t.tolist() == [1.0, 0.75, 1.0, 0.75]
    assert velocity[:, 0, 0].tolist() == [1 / -0.25, 1 / -0.75] * 2
    with pytest.raises(ValueError, match="trajectories of 3 states for 2 student times"):
        euler_targets(states, times[:2])


def test_a_teacher_sampled_in_the_students_euler_steps_is_already_the_student(teacher_export):
    own = [
        "distill.teacher_sample.steps=2",
        "distill.teacher_sample.sampler=euler",
        "distill.teacher_sample.cfg=1",
    ]
    data, student = build(teacher_export, *own)
    assert data.trajectories["train"][0]["trajectory"]["image"]["x"].shape == (3, 16, 4)
    exact = student.distillation_loss(first_batch(data)).item()
    # Up to float32 rounding of (x_{k+1} - x_k) / dt: the pairing of states, times and labels is right.
    assert exact < 1e-10
    guided, student = build(teacher_export)  # the recipe's teacher: 16 DPM-Solver++ steps at cfg 1.5
    assert student.distillation_loss(first_batch(guided)).item() > 1e4 * max(exact, 1e-14)


def test_distillation_lowers_the_loss_of_the_guided_teachers_trajectories(teacher_export):
    torch.manual_seed(0)
    data, student = build(teacher_export, "optimizer.lr=1e-3", "optimizer.warmup_steps=2")
    batch = first_batch(data)
    before = student.distillation_loss(batch).item()
    trainer = L.Trainer(
        max_steps=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(student, datamodule=data)
    assert student.distillation_loss(batch).item() < 0.2 * before  # held-out trajectories


def test_label_dropout_gives_the_teachers_unconditional_flow_to_a_share_of_trajectories(teacher_export):
    data, _ = build(teacher_export, "conditioning.dropout=0.5")
    digits = torch.stack([item["labels"]["digit"] for item in data.trajectories["train"]])
    null = data.teacher.model.label_embedders["digit"].null_index
    assert 0.3 < (digits == null).float().mean() < 0.7
    first = next(i for i, d in enumerate(digits) if d == null)
    # The 64 trajectories are one chunk of the teacher's, drawn from the seed's noise. Guidance between two
    # null-label branches is the unguided unconditional prediction: so is such an item's trajectory.
    unguided = data.teacher.sample_tokens(
        64,
        {"digit": torch.full((64,), null)},
        integrate=lambda predict, noise, g: data.teacher.objective.sample(predict, noise, 16, "dpmpp_2m"),
        cfg=1.0,
        seed=data.recipe.seed * 1_000_003,
    )
    x = data.trajectories["train"][first]["trajectory"]["image"]["x"][-1]
    assert_close(x, unguided["image"].x[first], atol=1e-5, rtol=1e-5)
    held = torch.stack([item["labels"]["digit"] for item in data.trajectories["heldout"]])
    assert not (held == null).any()  # validation asks for the held-out items' labels


def test_the_student_starts_from_the_teachers_weights(teacher_export):
    from mmdit.training.build import load_module

    _, student = build(teacher_export)
    teacher = load_module(teacher_export)
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(student.model.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sample.sampler=heun", r"set sample.sampler=euler and sample.cfg=1 \(got heun, cfg 1.0\)"),
        ("sample.cfg=1.5", r"trained for Euler steps without guidance"),
        ("model.width=64", r"its network does not fit the student's .*leave them as its own"),
        ("distill.trajectories=16", r"distill.trajectories 16 is fewer than data.batch_size 32"),
        ("distill.teacher_sample.sampler=ddim", r"sampler 'ddim' does not sample a flow objective"),
        ("distill.teacher_sample.steps=many", r"distill.teacher_sample: .*many"),
    ],
)
def test_recipes_the_student_cannot_train_are_named(teacher_export, override, message):
    recipe = load_recipe("image-digits-turbo", [f"distill.teacher={teacher_export}", *SMALL, override])
    with pytest.raises((ValueError, KeyError), match=message):
        run_builder.build(recipe)


def test_a_student_export_loads_as_an_ordinary_diffusion_module(teacher_export, tmp_path):
    from mmdit.training.build import load_module
    from mmdit.training.export import export_weights
    from mmdit.training.module import DiffusionModule

    _, student = build(teacher_export)
    loaded = load_module(export_weights(student, tmp_path / "student.safetensors"))
    assert type(loaded) is DiffusionModule and not isinstance(loaded, DistillModule)
    labels = {"digit": torch.arange(4)}
    assert_close(loaded.generate(4, labels)["image"], student.generate(4, labels)["image"])
    assert loaded.last_nfe == 2  # two Euler steps, unguided
