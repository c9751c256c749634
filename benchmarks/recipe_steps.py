"""Training-step time of a recipe's variants side by side in one process: which override makes steps cheaper.

    python benchmarks/recipe_steps.py RECIPE "key=value key=value" "key=value" ... [--rounds 5] [--steps 10]

Each variant is RECIPE with its overrides ("" for the recipe as is), built as `mmdit fit` builds it. A step is
`recipe_step.recipe_step` on a real training batch (loss with label dropout, backward, clipping, AdamW, in the
recipe's `trainer.precision`), on the CPU with torch's threads. After 4 warm-up steps each
(compilation), the variants take `--steps` steps in turn for `--rounds` rounds; printed: each round's mean
step and the median over rounds. Taking turns makes a machine whose speed drifts slow all variants alike, so
only ratios within one run compare.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from recipe_step import recipe_step

from mmdit.recipe import load_recipe
from mmdit.training.build import build
from mmdit.training.optim import optimizer_and_schedule


def variant(name: str, overrides: str, batches: int):
    """(module, step): `step()` runs one timed training step of the recipe with `overrides` and returns its
    seconds."""
    recipe = load_recipe(name, overrides.split())
    torch.manual_seed(recipe.seed)
    data, module = build(recipe)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    held = [next(loader) for _ in range(batches)]
    optimizer, _ = optimizer_and_schedule(module.parameters(), recipe.optimizer, recipe.trainer.max_steps)
    taken = 0

    def step() -> float:
        nonlocal taken
        batch = held[taken % len(held)]
        taken += 1
        start = time.perf_counter()
        recipe_step(module, batch, optimizer)
        return time.perf_counter() - start

    return module, step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe")
    parser.add_argument("variants", nargs="+", help='overrides per variant, e.g. "model.qk_norm=false"')
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    steps = {overrides: variant(args.recipe, overrides, args.steps)[1] for overrides in args.variants}
    for step in steps.values():
        for _ in range(4):
            step()
    rounds: dict[str, list[float]] = {overrides: [] for overrides in steps}
    for _ in range(args.rounds):
        for overrides, step in steps.items():
            rounds[overrides].append(statistics.mean(step() for _ in range(args.steps)))
    print(f"{args.recipe}: {args.rounds} rounds of {args.steps} steps, {torch.get_num_threads()} threads")
    for overrides, means in rounds.items():
        each = " ".join(f"{m * 1000:.0f}" for m in means)
        print(
            f"{overrides or '(as is)':50s} rounds {each} ms; median {statistics.median(means) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
