"""Teacher trajectories for distillation: the guided teacher integrates its ODE from noise, and the states it
passes at the student's times (`sample.steps` + 1 times from 1 to 0) are kept, per item with its labels and
numbers. They are drawn once before training (a batch of trajectories costs the teacher's NFE in network
calls, the student's step on it about three, so each is reused over epochs; docs/sampling.md#distillation)
and served by `TrajectoryDataModule` as the student's batches.

The teacher runs over its own schedule (`distill.teacher_sample`) with the student's times put in, so a
multistep solver keeps its history across the student's steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from rich.progress import Progress
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmdit.contract import ModalityAdapter
from mmdit.objectives.objective import Predict, State
from mmdit.recipe import TEACHER_SAMPLE_KEYS, SampleConfig
from mmdit.training.data import MediaDataModule
from mmdit.training.module import DiffusionModule

TEACHER_BATCH = 256  # trajectories the teacher integrates at once (x2 with guidance)
SAME_TIME = 1e-4  # a teacher time this close to a student time is the student's


def recorded_times(student: Tensor, teacher: Tensor) -> tuple[Tensor, list[int]]:
    """The times the teacher integrates along: its schedule teacher [T + 1] with the student's student [K + 1]
    put in (a teacher time within SAME_TIME of a student time gives way to it), from 1 down to 0; and the
    index of each student time in them."""
    nearest = (teacher[:, None] - student[None, :]).abs().min(dim=1).values
    times = torch.cat([teacher[nearest >= SAME_TIME], student]).sort(descending=True).values
    return times, [int((times == t).nonzero()[0, 0]) for t in student]


class TrajectoryRecorder:
    """An `integrate` for `DiffusionModule.sample_tokens`: integrates the objective's ODE along `times` with
    `sampler` and keeps, in `kept` ({stream: [B, K + 1, N, F]}), the states at the indices `keep` (index
    0 is the noise at times[0])."""

    def __init__(self, objective, sampler: str, times: Tensor, keep: list[int]):
        self.objective, self.sampler, self.times, self.keep = objective, sampler, times, keep
        self.kept: State = {}

    def __call__(self, predict: Predict, noise: State, generator: torch.Generator) -> State:
        device = next(iter(noise.values())).device
        states = self.objective.trajectory(predict, noise, self.times.to(device), self.sampler)
        kept, x = [noise] if self.keep[0] == 0 else [], noise
        for i, x in enumerate(states, start=1):
            if i in self.keep:
                kept.append(x)
        self.kept = {s: torch.stack([state[s] for state in kept], dim=1) for s in noise}
        return x


class TrajectoryDataset(Dataset):
    """Trajectories as items {"trajectory": {stream: {"x": [K + 1, N, F], "pos": [N, A], "mask": [N]}},
    "labels": {key: int64}, "numbers": {name: float}}; built from tensors with the item first."""

    def __init__(self, streams: Mapping[str, Mapping[str, Tensor]], labels, numbers):
        self.streams, self.labels, self.numbers = streams, labels, numbers

    def __len__(self) -> int:
        return len(next(iter(next(iter(self.streams.values())).values())))

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "trajectory": {s: {k: v[i] for k, v in parts.items()} for s, parts in self.streams.items()},
            "labels": {k: v[i] for k, v in self.labels.items()},
            "numbers": {k: v[i] for k, v in self.numbers.items()},
        }


def teacher_sampling(teacher: DiffusionModule, overrides: Mapping[str, Any]) -> DictConfig:
    """The teacher recipe's `sample` section with `distill.teacher_sample`'s keys in place, checked."""
    try:
        settings = OmegaConf.merge(OmegaConf.structured(SampleConfig), teacher.recipe.sample, overrides)
    except (ConfigKeyError, ValidationError) as err:
        raise ValueError(f"distill.teacher_sample: {str(err).splitlines()[0]}") from None
    teacher.objective.check_sampler(settings.sampler)
    teacher.objective.check_schedule(settings.schedule)
    return settings


def draw_trajectories(
    teacher: DiffusionModule,
    n: int,
    labels: Mapping[str, Tensor],
    numbers: Mapping[str, Tensor],
    student_times: Tensor,
    sampling: DictConfig,
    seed: int,
    progress: Progress | None = None,
) -> tuple[TrajectoryDataset, int]:
    """n teacher trajectories, item i with labels {key: [n]} and numbers {name: [n]}, recorded at
    student_times [K + 1]; the teacher samples with `sampling` (a checked sample section), the noise of
    items begin.. drawn from seed + begin. Returns the trajectories and the teacher's NFE per trajectory."""
    teacher_times = teacher.objective.schedule(sampling.steps, kind=sampling.schedule)
    times, keep = recorded_times(student_times.cpu(), teacher_times)
    recorder = TrajectoryRecorder(teacher.objective, sampling.sampler, times, keep)
    task = progress.add_task(f"teacher trajectories ({n})", total=n) if progress else None
    chunks: list[dict[str, dict[str, Tensor]]] = []
    for begin in range(0, n, TEACHER_BATCH):
        end = min(n, begin + TEACHER_BATCH)
        tokens = teacher.sample_tokens(
            end - begin,
            {k: v[begin:end] for k, v in labels.items()},
            {k: v[begin:end] for k, v in numbers.items()},
            integrate=recorder,
            cfg=sampling.cfg,
            guidance_interval=sampling.guidance_interval,
            cfg_schedule=sampling.cfg_schedule,
            seed=seed + begin,
        )
        chunks.append(
            {
                s: {"x": recorder.kept[s].float().cpu(), "pos": tok.pos.cpu(), "mask": tok.mask.cpu()}
                for s, tok in tokens.items()
            }
        )
        if progress:
            progress.advance(task, end - begin)
    streams = {s: {k: torch.cat([c[s][k] for c in chunks]) for k in chunks[0][s]} for s in chunks[0]}
    return TrajectoryDataset(streams, dict(labels), dict(numbers)), teacher.last_nfe


def item_conditions(dataset, n: int, keys: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Labels {key: [n]} and numbers {name: [n]} of items 0, 1, ... of `dataset`, cycling through it."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    chosen = [items[i % len(items)] for i in range(n)]
    labels = {k: torch.tensor([int(item["labels"][k]) for item in chosen]) for k in keys}
    names = list(chosen[0].get("numbers", {}))
    numbers = {k: torch.tensor([float(item["numbers"][k]) for item in chosen]) for k in names}
    return labels, numbers


class TrajectoryDataModule(MediaDataModule):
    """The recipe's data as the student's conditions: `distill.trajectories` teacher trajectories of the train
    items' labels and numbers (cycling through them; `conditioning.dropout` of them unconditional, which the
    teacher's guidance leaves unguided), and one per held-out item for the validation loss. They are drawn
    at `setup`, on the trainer's device, and summed up in the run directory's trajectories.json."""

    def __init__(
        self,
        recipe: DictConfig,
        adapters: Mapping[str, ModalityAdapter],
        teacher: DiffusionModule,
        student_times: Tensor,
    ):
        super().__init__(recipe, adapters)
        self.recipe, self.teacher, self.student_times = recipe, teacher, student_times
        self.sampling = teacher_sampling(teacher, recipe.distill.teacher_sample)
        if recipe.distill.trajectories < self.batch_size:
            raise ValueError(
                f"distill.trajectories {recipe.distill.trajectories} is fewer than data.batch_size "
                f"{self.batch_size}: no training batch would be full"
            )
        self.trajectories: dict[str, TrajectoryDataset] = {}

    def _labels_with_dropout(self, labels: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each item's labels replaced by the null class with probability `conditioning.dropout`."""
        if not labels or self.recipe.conditioning.dropout <= 0:
            return labels
        n = len(next(iter(labels.values())))
        generator = torch.Generator().manual_seed(self.recipe.seed)
        dropped = torch.rand(n, generator=generator) < self.recipe.conditioning.dropout
        nulls = {k: self.teacher.model.label_embedders[k].null_index for k in labels}
        return {k: torch.where(dropped, nulls[k], v) for k, v in labels.items()}

    def setup(self, stage: str) -> None:
        if self.trajectories:
            return
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        keys = list(self.recipe.conditioning.labels)
        count = self.recipe.distill.trajectories
        train_labels, train_numbers = item_conditions(self.train, count, keys)
        heldout_labels, heldout_numbers = item_conditions(self.heldout, len(self.heldout), keys)
        teacher = self.teacher.to(device)
        start = time.perf_counter()
        shown = trainer is None or trainer.progress_bar_callback is not None
        base = self.recipe.seed * 1_000_003  # chunk seeds base + i: train and held-out noise never shared
        with Progress(disable=not shown, transient=True) as progress:
            self.trajectories["train"], nfe = draw_trajectories(
                teacher,
                count,
                self._labels_with_dropout(train_labels),
                train_numbers,
                self.student_times,
                self.sampling,
                base,
                progress,
            )
            self.trajectories["heldout"], _ = draw_trajectories(
                teacher,
                len(self.heldout),
                heldout_labels,
                heldout_numbers,
                self.student_times,
                self.sampling,
                base + count,
                progress,
            )
        seconds = time.perf_counter() - start
        teacher.to("cpu")
        if trainer is not None and trainer.is_global_zero:
            summary = {
                "teacher": self.recipe.distill.teacher,
                "sampling": {k: OmegaConf.to_container(self.sampling)[k] for k in TEACHER_SAMPLE_KEYS},
                "teacher_nfe": nfe,
                "student_times": [round(float(t), 6) for t in self.student_times],
                "train": count,
                "heldout": len(self.heldout),
                "seconds": round(seconds, 2),
            }
            path = Path(trainer.default_root_dir) / "trajectories.json"
            path.write_text(json.dumps(summary, indent=2) + "\n")

    def train_dataloader(self) -> DataLoader:
        return self._shuffled(self.trajectories["train"])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.trajectories["heldout"])
