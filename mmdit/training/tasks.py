"""Tasks: what a training step asks of each stream. A task gives every stream taking part a role
(`mmdit.model.masks.ROLES`): "generate" (noised media, or a discrete stream predicted id by id),
"condition" (clean input) or "understand" (clean media that a generated discrete stream describes).

A plain recipe is the one task {data stream: generate}; a unified recipe lists several under `tasks:`, and
each training step draws one of them by weight. Roles decide each stream's time, the attention structure
and which streams have a loss.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from mmdit.model.masks import ROLES


@dataclass(frozen=True)
class Task:
    """name, its drawing weight, and {stream: role} of the streams taking part (the others are absent)."""

    name: str
    weight: float
    roles: Mapping[str, str]

    def streams(self, role: str) -> list[str]:
        """The streams of this task with `role`, in the task's order."""
        return [s for s, r in self.roles.items() if r == role]

    @property
    def inputs(self) -> list[str]:
        """The streams the task reads clean (every role but generate), in the task's order."""
        return [s for s, r in self.roles.items() if r != "generate"]

    @property
    def direction(self) -> str:
        """ "text -> image": what the task reads ("noise" when nothing), then what it generates."""
        return f"{' + '.join(self.inputs or ['noise'])} -> {' + '.join(self.streams('generate'))}"


def recipe_tasks(recipe: DictConfig, streams: Sequence[str], data_stream: str) -> list[Task]:
    """The recipe's `tasks` checked against its `streams`, or the one implied task
    {data_stream: generate} of a plain recipe."""
    if not recipe.tasks:
        return [Task("generate", 1.0, {data_stream: "generate"})]
    tasks = []
    for name, task in recipe.tasks.items():
        unknown = set(task.roles) - set(streams)
        if unknown:
            raise KeyError(
                f"task {name!r}: roles for unknown streams {sorted(unknown)}; streams: {list(streams)}"
            )
        for stream, role in task.roles.items():
            if role not in ROLES:
                raise ValueError(
                    f"task {name!r}: unknown stream role {role!r} for {stream!r}; roles: {ROLES}"
                )
        if "generate" not in task.roles.values():
            raise ValueError(f"task {name!r} generates nothing: give one stream the role generate")
        if task.weight <= 0:
            raise ValueError(f"task {name!r}: weight must be positive, got {task.weight}")
        # The model's stream order, so attention concatenates the streams the same way in every task.
        roles = {s: task.roles[s] for s in streams if s in task.roles}
        tasks.append(Task(name, float(task.weight), roles))
    return tasks


def pick_task(tasks: Sequence[Task], seed: int, step: int) -> Task:
    """The task of a training step: drawn by weight from a generator seeded with (seed, step), so every DDP
    rank trains the same task at once."""
    if len(tasks) == 1:
        return tasks[0]
    draw = random.Random(seed * 1_000_003 + step)
    return draw.choices(list(tasks), [t.weight for t in tasks])[0]
