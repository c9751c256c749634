"""One AdamW step over a DiT preset's parameters: torch's fused AdamW (what a recipe builds, see
`mmdit.training.optim.optimizer_and_schedule`) against its default foreach one, steps alternating in one
process.

    python benchmarks/optimizer_step.py [--sizes DiT-S/2 DiT-B/2] [--steps 10] [--threads N]

Gradients are random and fixed; the median of `steps` steps after 2 warm-up steps is printed per variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from latent_dit import latent_dit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["DiT-S/2", "DiT-B/2"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.steps} steps")
    for size in args.sizes:
        torch.manual_seed(0)
        parameters = list(latent_dit(size)[0].parameters())
        for p in parameters:
            p.grad = torch.randn_like(p)
        optimizers = {
            "foreach": torch.optim.AdamW(parameters, lr=1e-4, foreach=True),
            "fused": torch.optim.AdamW(parameters, lr=1e-4, fused=True),
        }
        times: dict[str, list[float]] = {name: [] for name in optimizers}
        for _ in range(args.steps + 2):
            for name, optimizer in optimizers.items():
                start = time.perf_counter()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
        count = sum(p.numel() for p in parameters)
        medians = {name: statistics.median(t[2:]) * 1000 for name, t in times.items()}
        print(
            f"{size:8s} {count / 1e6:6.1f} M params in {len(parameters)} tensors: "
            + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items())
            + f" (fused / foreach {medians['fused'] / medians['foreach']:.2f})"
        )


if __name__ == "__main__":
    main()
