"""`mmdit eval`: generate one item for each held-out item, with its labels and numbers (so generated clips
have the held-out durations), and let the modality judge them against the real data (the reference row
scores real held-out data the same way)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from rich.progress import Progress

from mmdit.contract import DiscreteAdapter, ModalityAdapter
from mmdit.training.data import data_source
from mmdit.training.module import DiffusionModule

BATCH = 500  # samples generated per model batch (x2 with guidance)


def understanding(module: DiffusionModule, heldout, key: str, show_progress: bool) -> dict[str, float]:
    """{"generated": share of held-out items whose greedy description names exactly their class `key`,
    "reference": the same for their real held-out captions (what a perfect describer scores)}."""
    writer: DiscreteAdapter = module.adapters[module.written_stream]
    items = [heldout[i] for i in range(len(heldout))]
    truth = [item["labels"][key] for item in items]
    written = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"describing {len(items)} held-out items", total=len(items))
        for begin in range(0, len(items), BATCH):
            chunk = items[begin : begin + BATCH]
            media = torch.stack([item["media"] for item in chunk])
            numbers = {
                k: torch.tensor([item["numbers"][k] for item in chunk]) for k in chunk[0].get("numbers", {})
            }
            written += module.describe(media, module.stream, numbers=numbers)
            progress.advance(task, len(media))
    labels = {k: torch.tensor([item["labels"][k] for item in items]) for k in module.preview_label_keys()}
    captions = module.prompts_for(labels, "heldout")

    def named(texts: list[str]) -> float:
        hits = [
            writer.named_classes(t, key, module.classes) == [c] for t, c in zip(texts, truth, strict=True)
        ]
        return sum(hits) / len(hits)

    return {"generated": named(written), "reference": named(captions)}


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

    A unified model is judged from one checkpoint both ways: media generated from held-out phrasings of
    the held-out items' captions, and "understanding_accuracy", the share of held-out real items whose
    description names their class."""
    adapter: ModalityAdapter = module.adapters[module.stream]
    source = data_source(module.recipe)
    seed = module.recipe.data.split_seed
    train, heldout = adapter.dataset(source, "train", seed), adapter.dataset(source, "heldout", seed)
    n = next((v for v in (samples, module.recipe.eval.samples) if v is not None), len(heldout))
    if n < 1:
        raise ValueError(f"eval.samples must be at least 1, got {n}")
    items = [heldout[i % len(heldout)] for i in range(n)]
    prompted = module.prompt_stream is not None
    keys = module.preview_label_keys()
    wanted = {k: torch.tensor([item["labels"][k] for item in items]) for k in keys}
    sizes = {k: torch.tensor([item["numbers"][k] for item in items]) for k in items[0].get("numbers", {})}
    prompts = module.prompts_for(wanted, "heldout") if prompted else None
    start = time.perf_counter()
    chunks = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"generating {n} samples", total=n)
        for begin in range(0, n, BATCH):
            end = min(n, begin + BATCH)
            labels = {k: v[begin:end] for k, v in wanted.items()}
            numbers = {k: v[begin:end] for k, v in sizes.items()}
            options = dict(steps=steps, method=method, cfg=cfg, seed=begin, schedule=schedule)
            options.update(guidance_interval=guidance_interval, cfg_schedule=cfg_schedule)
            if prompted:
                options["prompts"] = prompts[begin:end]
            media = module.generate(end - begin, labels, numbers, **options)
            chunks.append(media[module.stream].cpu())
            progress.advance(task, end - begin)
    generated = torch.cat(chunks)
    seconds = time.perf_counter() - start
    report = adapter.evaluate(generated, wanted, train, heldout)
    if module.describes:
        for row, value in understanding(module, heldout, keys[0], show_progress).items():
            report[row]["understanding_accuracy"] = value
    settings = module.recipe.sample
    interval = settings.guidance_interval if guidance_interval is None else guidance_interval
    return {
        "recipe": module.recipe.name,
        **report,
        "sampling": {
            "steps": steps or settings.steps,
            "sampler": method or settings.sampler,
            "schedule": schedule or settings.schedule,
            "cfg": settings.cfg if cfg is None else cfg,
            "guidance_interval": list(interval),
            "cfg_schedule": cfg_schedule or settings.cfg_schedule,
            "nfe": module.last_nfe,
            "samples": n,
            "seconds": round(seconds, 2),
        },
    }
