"""Training step time of a recipe on its media (encoded every step) and on its token cache (`data.cache`),
and the time of the data adapter's `encode` alone.

    python benchmarks/token_cache.py [RECIPE] [--steps 30] [--warmup 5] [--threads 1] [key=value ...]

Prepares the cache first (as `mmdit prepare`). Each mode builds the recipe's datamodule and module from the
same seed; one step = next train batch + `task_losses` + backward + AdamW step, as Lightning's loop
without its bookkeeping. The two modes alternate step by step after `warmup` steps each, so a load that
changes on a shared machine touches both alike; prints the median and mean of each step and of the batch
fetch (dataset reads + collation) within it. The encode row times
`adapter.encode` alone on `steps` train batches.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator

import lightning as L
import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build, build_adapters
from mmdit.training.data import data_stream
from mmdit.training.token_cache import prepare_tokens


def batches(loader) -> Iterator:
    while True:
        yield from loader


def stepper(recipe) -> Callable[[], float]:
    """One training step of `recipe` per call, on the batches its datamodule serves; returns the seconds
    spent fetching (loading and collating) the batch."""
    L.seed_everything(recipe.seed, verbose=False)
    data, module = build(recipe)
    optimizer = torch.optim.AdamW(module.parameters(), lr=recipe.optimizer.lr)
    stream = batches(data.train_dataloader())

    def step() -> float:
        start = time.perf_counter()
        batch = next(stream)
        fetched = time.perf_counter() - start
        losses = module.task_losses(batch, module.tasks[0], recipe.conditioning.dropout)
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return fetched

    return step


def timed(call: Callable[[], object]) -> tuple[float, object]:
    """(seconds the call took, what it returned)"""
    start = time.perf_counter()
    out = call()
    return time.perf_counter() - start, out


def summary(name: str, seconds: list[float]) -> None:
    print(
        f"{name:34s} median {statistics.median(seconds) * 1000:7.1f} ms   "
        f"mean {statistics.fmean(seconds) * 1000:7.1f} ms   ({len(seconds)} timed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("recipe", nargs="?", default="audio-notes")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key=value")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    media_recipe = load_recipe(args.recipe, [*args.overrides, "data.cache=false"])
    cached_recipe = load_recipe(args.recipe, [*args.overrides, "data.cache=true"])
    prepare_tokens(media_recipe, build_adapters(media_recipe))
    print(f"{args.recipe}: batch {media_recipe.data.batch_size}, {torch.get_num_threads()} thread(s)")

    modes = {"step, encoding media": stepper(media_recipe), "step, cached tokens": stepper(cached_recipe)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    fetches: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.warmup):
        for step in modes.values():
            step()
    for _ in range(args.steps):
        for name, step in modes.items():
            seconds, fetched = timed(step)
            times[name].append(seconds)
            fetches[name].append(fetched)
    for name in modes:
        summary(name, times[name])
        summary("  of which fetching the batch", fetches[name])

    adapter = build_adapters(media_recipe)[data_stream(media_recipe)]
    data, _ = build(media_recipe)
    stream = batches(data.train_dataloader())
    encode = []
    for _ in range(args.steps):
        batch = next(stream)
        encode.append(timed(lambda b=batch: adapter.encode(b["media"], b.get("numbers", {})))[0])
    summary("encode alone (per batch)", encode)


if __name__ == "__main__":
    main()
