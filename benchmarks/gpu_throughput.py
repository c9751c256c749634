"""DiT-XL/2 at 256 px (32×32×4 latents) in bf16 on one GPU: images/s, step time, peak memory and MFU.

    python benchmarks/gpu_throughput.py [--batch 64] [--steps 20] [--compile] [--profile FILE]

A step is forward + backward + AdamW under bf16 autocast (Lightning's "bf16-mixed"), on random latents with
the learned-sigma output of DiT. Model FLOPs per image = 6 × the multiply-accumulates of `mmdit.model.flops`
(training = 3 × forward, a MAC = 2 FLOPs); MFU = achieved model FLOP/s / the card's dense bf16 peak.
`--profile FILE` profiles 3 more steps after the timed ones and writes the CUDA kernels that took the most
time to FILE (where a step's time goes).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from latent_dit import CHANNELS, CLASSES, SIDE, latent_dit
from recipe_step import recipe_adamw
from regression_target import target

from mmdit.model.flops import training_flops
from mmdit.model.tokens import Tokens
from modalities.common.grids import grid_positions

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' datasheets.
PEAK_BF16 = {"H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12}


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16.items():
        if all(part in name for part in key.split()):
            return value
    if "H100" in name:  # an H100 whose form factor the name does not say: assume SXM
        return PEAK_BF16["H100 SXM"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--profile", type=Path, help="write the costliest CUDA kernels of 3 steps here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    model, patch = latent_dit("DiT-XL/2", args.compile)
    model.to(device)
    grid, features = SIDE // patch, CHANNELS * patch * patch
    optimizer = recipe_adamw(model.parameters())
    pos = grid_positions(grid, grid, args.batch, device)
    tokens = Tokens(torch.randn(args.batch, grid * grid, features, device=device), pos,
                    torch.ones(args.batch, grid * grid, dtype=torch.bool, device=device))  # fmt: skip
    labels = {"class": torch.randint(0, CLASSES, (args.batch,), device=device)}

    def train_step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model({"image": tokens}, torch.rand(args.batch, device=device), labels)["image"]
            loss = (out.float() - target(out)).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    for _ in range(args.steps + 3):  # 3 warm-up steps (compilation, cuDNN / cuBLAS autotuning)
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[3:])
    name = torch.cuda.get_device_name()
    flops = args.batch * training_flops(model, {"image": grid * grid}) / step
    peak = peak_flops(name)
    mfu = f"{flops / peak:.1%}" if peak else "n/a (unknown card)"
    print(
        f"{name} | DiT-XL/2 256px bf16 | compile {'yes' if args.compile else 'no'} | batch {args.batch} | "
        f"step {step * 1000:.1f} ms | {args.batch / step:.1f} images/s | "
        f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB | "
        f"{flops / 1e12:.1f} TFLOP/s | MFU {mfu}"
    )
    if args.profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
            for _ in range(3):
                train_step()
            torch.cuda.synchronize()
        table = profiler.key_averages().table(
            sort_by="self_device_time_total", row_limit=40, max_name_column_width=90
        )
        args.profile.write_text(table)


if __name__ == "__main__":
    main()
