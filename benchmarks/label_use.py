"""Does a model use its labels? Train a one-stream flow recipe for a few steps and, every `--every` steps,
compare its held-out loss with the true labels against the loss with one label shuffled across the batch.

    python benchmarks/label_use.py RECIPE [key=value ...] [--steps 1500] [--every 250] [--batch 256]

The held-out batch, its noise and the shuffles are fixed, so the rows are comparable across steps and
across recipe variants. For each time t of `--times` the table gives the loss with true labels and, per
label, the relative loss increase when that label is shuffled (in %): near zero means the model does not
condition on that label at that noise level. Training is the recipe's (AdamW, warm-up, decay, gradient
clip, condition dropout, precision: `recipe_step`) without EMA, previews or checkpoints, so that variants
compare in minutes.
"""

from __future__ import annotations

import argparse
import time

import torch
from recipe_step import recipe_step
from torch.utils.data import DataLoader

from mmdit.recipe import load_recipe
from mmdit.training.build import build
from mmdit.training.optim import optimizer_and_schedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--batch", type=int, default=256, help="held-out items scored")
    parser.add_argument("--times", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, args.overrides)
    torch.manual_seed(recipe.seed)
    data, module = build(recipe)
    if module.objective.kind != "flow" or len(recipe.streams) != 1:
        raise SystemExit("label_use.py scores one-stream flow recipes")
    keys = list(recipe.conditioning.labels)
    if not keys:
        raise SystemExit(f"{args.recipe} conditions on no labels")
    model, flow, adapter = module.model, module.objective, module.adapters[module.stream]

    heldout = next(iter(DataLoader(data.heldout, batch_size=args.batch, shuffle=False)))
    tokens = adapter.encode(heldout["media"], heldout.get("numbers"))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(tokens.x.shape, generator=g)
    shuffles = {k: torch.randperm(tokens.batch_size, generator=g) for k in keys}
    truth = {k: heldout["labels"][k] for k in keys}
    numbers = module.conditioning_numbers(heldout.get("numbers", {}))

    @torch.no_grad()
    def losses(labels: dict[str, torch.Tensor]) -> list[float]:
        scores = []
        for value in args.times:
            t = torch.full((tokens.batch_size,), value)
            noised = tokens.with_x(flow.add_noise(tokens.x, noise, t))
            out = model({module.stream: noised}, t, labels=labels, numbers=numbers)[module.stream]
            target = flow.target(tokens.x, noise)
            scores.append(flow.loss(flow.velocity(out, noised.x, t), target, tokens.mask).item())
        return scores

    def report(step: int, seconds: float) -> None:
        model.eval()
        true = losses(truth)
        cells = [f"step {step:5d} ({seconds:5.0f} s)  loss " + " ".join(f"{v:.4f}" for v in true)]
        for k in keys:
            shuffled = losses({**truth, k: truth[k][shuffles[k]]})
            rises = (100 * (s - v) / v for s, v in zip(shuffled, true, strict=True))
            cells.append(f"{k} +% " + " ".join(f"{r:5.2f}" for r in rises))
        print(" | ".join(cells), flush=True)
        model.train()

    optimizer, schedule = optimizer_and_schedule(model.parameters(), recipe.optimizer, args.steps)
    setup = " ".join([args.recipe, *args.overrides])
    print(f"{setup}: loss at t = {args.times}, then its % increase per shuffled label")
    loader, step, start = data.train_dataloader(), 0, time.perf_counter()
    while step < args.steps:
        for batch in loader:
            recipe_step(module, batch, optimizer)
            schedule.step()
            step += 1
            if step % args.every == 0:
                report(step, time.perf_counter() - start)
            if step == args.steps:
                break


if __name__ == "__main__":
    main()
