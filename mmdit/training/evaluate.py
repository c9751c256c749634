"""`mmdit eval`: for every held-out item, generate one item with its labels and numbers (so generated clips
have the held-out durations), and let the modality judge them against the real data (the reference row
scores real held-out data the same way).

A unified recipe is judged task by task, from one checkpoint: a task that makes media from a caption or
from another medium is judged by the generated medium's adapter (media asked for with held-out phrasings
of the held-out items' captions, or made from the held-out items' other medium); a task that writes about
media by the share of held-out items whose description names each property its captions name."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor

from mmdit.contract import DiscreteAdapter
from mmdit.training.data import data_source, data_stream, joined
from mmdit.training.module import DiffusionModule
from mmdit.training.tasks import Task

BATCH = 500  # samples generated per model batch (x2 with guidance)


def own_splits(module: DiffusionModule, stream: str) -> tuple[Any, Any]:
    """(train, held-out) of the dataset a media stream reads (`data.source`, or its `data.join` source)."""
    source, seed = data_source(module.recipe, stream), module.recipe.data.split_seed
    adapter = module.adapters[stream]
    return adapter.dataset(source, "train", seed), adapter.dataset(source, "heldout", seed)


def media_of(item: Mapping[str, Any], stream: str) -> Tensor:
    """An item's media of `stream` (items of one medium hold it directly)."""
    media = item["media"]
    return media[stream] if isinstance(media, Mapping) else media


def stacked(items: Sequence[Mapping[str, Any]], part: str) -> dict[str, Tensor]:
    """{name: [n]} of the items' labels or numbers (`part`)."""
    names = items[0].get(part, {})
    return {k: torch.tensor([item[part][k] for item in items]) for k in names}


def generation(
    module: DiffusionModule,
    task: Task,
    items: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
    show_progress: bool,
) -> tuple[dict[str, dict[str, float]], float]:
    """The report rows of `task`'s generated medium, one item per held-out item (its labels, numbers and
    its media of the task's clean media streams; captions in held-out phrasings), and the seconds taken."""
    stream = next(s for s in task.streams("generate") if s not in module.discrete)
    wanted, sizes = stacked(items, "labels"), stacked(items, "numbers")
    given = module.media_inputs(task)
    prompted = len(given) < len(task.inputs)
    prompts = module.prompts_for(wanted, "heldout") if prompted else None
    start, chunks, n = time.perf_counter(), [], len(items)
    with Progress(disable=not show_progress, transient=True) as progress:
        bar = progress.add_task(f"{task.name}: generating {n} samples", total=n)
        for begin in range(0, n, BATCH):
            end = min(n, begin + BATCH)
            call = dict(options, seed=begin, task=task.name)
            if prompted:
                call["prompts"] = prompts[begin:end]
            if given:
                call["given"] = {s: torch.stack([media_of(i, s) for i in items[begin:end]]) for s in given}
            labels = {k: v[begin:end] for k, v in wanted.items()}
            numbers = {k: v[begin:end] for k, v in sizes.items()}
            chunks.append(module.generate(end - begin, labels, numbers, **call)[stream].cpu())
            progress.advance(bar, end - begin)
    seconds = time.perf_counter() - start
    return module.adapters[stream].evaluate(torch.cat(chunks), wanted, *own_splits(module, stream)), seconds


def understanding(
    module: DiffusionModule, task: Task, items: Sequence[Mapping[str, Any]], show_progress: bool
) -> dict[str, dict[str, float]]:
    """The report rows of a describing task: "named_<key>", the share of held-out items whose greedy
    description names exactly their class of each label its captions name (and that the described
    medium's data has), and "understanding_accuracy", the share naming all of them; the reference row
    scores the items' real held-out captions (what a perfect describer scores)."""
    writer: DiscreteAdapter = module.adapters[module.written_stream]
    stream = next(s for s in task.roles if task.roles[s] == "understand")
    own = own_splits(module, stream)[0].classes
    keys = [k for k in writer.caption_keys() if k in own]
    if not keys:
        raise ValueError(
            f"task {task.name!r}: the captions name none of {stream!r}'s labels {sorted(own)}, so there is "
            "nothing to score its descriptions on"
        )
    written = []
    with Progress(disable=not show_progress, transient=True) as progress:
        bar = progress.add_task(f"{task.name}: describing {len(items)} held-out items", total=len(items))
        for begin in range(0, len(items), BATCH):
            chunk = items[begin : begin + BATCH]
            media = torch.stack([media_of(item, stream) for item in chunk])
            numbers = stacked(chunk, "numbers")
            written += module.describe(media, stream, numbers=numbers or None)
            progress.advance(bar, len(media))
    labels = stacked(items, "labels")
    captions = module.prompts_for(labels, "heldout")

    def scores(texts: list[str]) -> dict[str, float]:
        def named(k: str) -> list[bool]:
            truth = labels[k].tolist()
            return [
                writer.named_classes(t, k, module.classes) == [c] for t, c in zip(texts, truth, strict=True)
            ]

        hits = {k: named(k) for k in keys}
        row = {f"named_{k}": sum(h) / len(h) for k, h in hits.items()}
        row["understanding_accuracy"] = sum(map(all, zip(*hits.values(), strict=True))) / len(texts)
        return row

    return {"generated": scores(written), "reference": scores(captions)}


def evaluate(
    module: DiffusionModule,
    *,
    steps: int | None = None,
    method: str | None = None,
    cfg: float | None = None,
    schedule: str | None = None,
    guidance_interval: Sequence[float] | None = None,
    cfg_schedule: str | None = None,
    samples: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Returns {"recipe", "generated": {metric: value}, "reference": {metric: value}, "sampling": {...}}:
    the sampling settings (None: the recipe's `sample` section) and "nfe", the network evaluations per
    item they took (a guided evaluation counts two).

    `samples` (default the recipe's `eval.samples`, else one per held-out item) items are generated, item
    i with the labels (and numbers) of held-out item i mod the held-out count.

    A unified recipe also gets "tasks": {task: {"direction", "generated", "reference"}}, every task judged
    (module docstring); its top rows are the first task generating the data stream's medium, with the
    "understanding_accuracy" of the first task describing it."""
    recipe, stream = module.recipe, data_stream(module.recipe)
    base = module.adapters[stream].dataset(data_source(recipe), "heldout", recipe.data.split_seed)
    heldout = joined(recipe, module.adapters, base, "heldout")
    n = next((v for v in (samples, recipe.eval.samples) if v is not None), len(heldout))
    if n < 1:
        raise ValueError(f"eval.samples must be at least 1, got {n}")
    items = [heldout[i % len(heldout)] for i in range(n)]
    options = dict(steps=steps, method=method, cfg=cfg, schedule=schedule)
    options.update(guidance_interval=guidance_interval, cfg_schedule=cfg_schedule)
    rows, seconds, nfe = {}, 0.0, {}
    for task in module.tasks:
        if task.roles.get(module.written_stream) == "generate":
            rows[task.name] = understanding(module, task, items, show_progress)
        else:
            rows[task.name], spent = generation(module, task, items, options, show_progress)
            seconds, nfe[task.name] = seconds + spent, module.last_nfe
    main = module.task_making(stream)
    report = {row: dict(values) for row, values in rows[main.name].items()}
    if module.describes:
        described = module.describing_task(stream)
        for row in report:
            report[row]["understanding_accuracy"] = rows[described.name][row]["understanding_accuracy"]
    settings = recipe.sample
    interval = settings.guidance_interval if guidance_interval is None else guidance_interval
    result = {
        "recipe": recipe.name,
        **report,
        "sampling": {
            "steps": steps or settings.steps,
            "sampler": method or settings.sampler,
            "schedule": schedule or settings.schedule,
            "cfg": settings.cfg if cfg is None else cfg,
            "guidance_interval": list(interval),
            "cfg_schedule": cfg_schedule or settings.cfg_schedule,
            "nfe": nfe[main.name],
            "samples": n,
            "seconds": round(seconds, 2),
        },
    }
    if recipe.tasks:
        result["tasks"] = {t.name: {"direction": t.direction, **rows[t.name]} for t in module.tasks}
    return result
