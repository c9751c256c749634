"""`mmdit eval`: generate one item for each held-out item, with its labels and numbers (so generated clips
have the held-out durations), and let the modality judge them against the real data (the reference row
scores real held-out data the same way)."""

from __future__ import annotations

import time
from typing import Any

import torch
from rich.progress import Progress

from mmdit.data import data_source
from mmdit.module import DiffusionModule
from modalities.base import ModalityAdapter

BATCH = 500  # samples generated per model batch (x2 with guidance)


def evaluate(
    module: DiffusionModule,
    *,
    steps: int | None = None,
    method: str | None = None,
    cfg: float | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Returns {"recipe", "generated": {metric: value}, "reference": {metric: value}, "sampling": {...}}."""
    adapter: ModalityAdapter = module.adapters[module.stream]
    source = data_source(module.recipe)
    train, heldout = adapter.dataset(source, "train"), adapter.dataset(source, "heldout")
    n = len(heldout)
    items = [heldout[i] for i in range(n)]
    wanted = {k: torch.tensor([item["labels"][k] for item in items]) for k in module.model.label_embedders}
    sizes = {k: torch.tensor([item["numbers"][k] for item in items]) for k in items[0].get("numbers", {})}
    start = time.perf_counter()
    chunks = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"generating {n} samples", total=n)
        for begin in range(0, n, BATCH):
            end = min(n, begin + BATCH)
            labels = {k: v[begin:end] for k, v in wanted.items()}
            numbers = {k: v[begin:end] for k, v in sizes.items()}
            media = module.generate(
                end - begin, labels, numbers, steps=steps, method=method, cfg=cfg, seed=begin
            )
            chunks.append(media[module.stream].cpu())
            progress.advance(task, end - begin)
    generated = torch.cat(chunks)
    seconds = time.perf_counter() - start
    report = adapter.evaluate(generated, wanted, train, heldout)
    settings = module.recipe.sample
    return {
        "recipe": module.recipe.name,
        **report,
        "sampling": {
            "steps": steps or settings.steps,
            "sampler": method or settings.sampler,
            "cfg": settings.cfg if cfg is None else cfg,
            "samples": n,
            "seconds": round(seconds, 2),
        },
    }
