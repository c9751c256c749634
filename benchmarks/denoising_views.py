"""Where does a trained flow model decide what it draws? Noise a few held-out items to several times t (one
fixed noise draw) and show the model's estimate of the clean item at each, beside the real item.

    python benchmarks/denoising_views.py WEIGHTS [--items 3] [--times 0.9 0.7 0.5 0.3 0.1] [--out views.png]

The estimate is the model's x̂0 (`RectifiedFlow.clean_estimate`: its output for x0 prediction, x_t − t·v̂
for velocity prediction), with the items' own labels, unguided. The picture is the adapter's preview of,
per item, the real item followed by its estimates from the noisiest time down: for video one row per clip
(frames left to right). Where the estimate turns from a blur into the item's shape is where sampling
commits to it.
"""

from __future__ import annotations

import argparse

import torch

from mmdit.training.build import load_module
from mmdit.training.data import data_source
from mmdit.training.module import DiffusionModule


@torch.no_grad()
def clean_estimates(module: DiffusionModule, items: list[dict], times: list[float]) -> torch.Tensor:
    """items: held-out items {"media", "labels", "numbers"?} -> media [len(items) * (1 + len(times)), ...]:
    each real item followed by the model's clean estimates at `times`."""
    adapter = module.adapters[module.stream]
    media = torch.stack([item["media"] for item in items])
    keys = module.preview_label_keys()
    labels = {k: torch.tensor([item["labels"][k] for item in items]) for k in keys}
    given = {k: torch.tensor([item["numbers"][k] for item in items]) for k in items[0].get("numbers", {})}
    numbers = module.conditioning_numbers(given)
    clean = adapter.encode(media, given)
    noise = torch.randn(clean.x.shape, generator=torch.Generator().manual_seed(0))
    views = [media]
    for value in times:
        t = torch.full((len(items),), value)
        noised = clean.with_x(module.objective.add_noise(clean.x, noise, t))
        out = module.model({module.stream: noised}, t, labels, numbers=numbers)[module.stream]
        estimate = module.objective.clean_estimate(out, noised.x, t)
        views.append(adapter.decode(clean.with_x(estimate)).clamp(0, 1))
    return torch.stack(views, dim=1).flatten(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--items", type=int, default=3)
    parser.add_argument("--times", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3, 0.1])
    parser.add_argument("--out", default="denoising_views.png")
    args = parser.parse_args()
    module = load_module(args.weights).eval()
    if module.objective.kind != "flow":
        raise ValueError(f"{args.weights}: denoising views need a flow objective (objective.type: flow)")
    heldout = module.adapters[module.stream].dataset(data_source(module.recipe), "heldout")
    items = [heldout[i] for i in range(min(args.items, len(heldout)))]
    path = module.adapters[module.stream].preview(clean_estimates(module, items, args.times), args.out)
    print(f"{path}: per item, the real one, then the clean estimate at t = {args.times}")


if __name__ == "__main__":
    main()
