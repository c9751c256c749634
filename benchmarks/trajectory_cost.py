"""What distillation's teacher trajectories cost against the student's steps, to choose between drawing
them once up front (what `mmdit.training.trajectories` does) and drawing each batch's afresh.

    python benchmarks/trajectory_cost.py [--recipe image-digits-turbo] [--teacher image-digits] [KEY=VALUE]

Builds the distillation run exactly as `mmdit fit` would, from an export of the teacher recipe's network
with random weights (the cost does not depend on them), then times the teacher's trajectories for one
training batch and the student's training step (loss, backward, AdamW) on one, in one process on the CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from recipe_step import recipe_adamw
from torch.utils.data import default_collate

from mmdit.recipe import load_recipe
from mmdit.training.build import build, build_adapters
from mmdit.training.export import export_weights
from mmdit.training.module import DiffusionModule
from mmdit.training.trajectories import draw_trajectories, item_conditions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="image-digits-turbo")
    parser.add_argument("--teacher", default="image-digits", help="the teacher's recipe (random weights)")
    parser.add_argument("--steps", type=int, default=10, help="student steps timed after one warm-up")
    parser.add_argument("overrides", nargs="*", help="overrides of the distillation recipe")
    args = parser.parse_args()
    teacher_recipe = load_recipe(args.teacher)
    with tempfile.TemporaryDirectory() as folder:
        adapters = build_adapters(teacher_recipe)
        classes = build(teacher_recipe)[0].classes
        teacher = export_weights(
            DiffusionModule(teacher_recipe, classes, adapters), Path(folder) / "teacher.safetensors"
        )
        recipe = load_recipe(args.recipe, [f"distill.teacher={teacher}", *args.overrides])
        data, student = build(recipe)
    batch_size = recipe.data.batch_size
    labels, numbers = item_conditions(data.train, batch_size, list(recipe.conditioning.labels))
    start = time.perf_counter()
    trajectories, nfe = draw_trajectories(
        data.teacher, batch_size, labels, numbers, student.student_times(), data.sampling, seed=0
    )
    teacher_seconds = time.perf_counter() - start
    batch = default_collate([trajectories[i] for i in range(batch_size)])
    optimizer = recipe_adamw(student.parameters())

    def step() -> None:
        student.distillation_loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    student_seconds = (time.perf_counter() - start) / args.steps
    print(f"{recipe.name}, batch {batch_size}, {torch.get_num_threads()} threads")
    print(f"teacher ({nfe} NFE a trajectory): {teacher_seconds:.3f} s for a batch's trajectories")
    print(f"student step ({recipe.sample.steps} states a trajectory): {student_seconds:.3f} s")
    ratio = (teacher_seconds + student_seconds) / student_seconds
    print(f"a step with its trajectories drawn afresh: {ratio:.1f}x")


if __name__ == "__main__":
    main()
