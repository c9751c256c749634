"""Training throughput of the MMDiT core on this machine: forward + backward + AdamW step, in samples/s,
tokens/s and achieved GFLOP/s (6 x the MACs of `mmdit.model.flops`), for the digits model and DiT-S/2 at
32×32×4 (DiT's latent shape at 256 px).

    python benchmarks/throughput.py [--steps 10] [--threads N]

Times `steps` steps after 3 warm-up steps, in one process, fp32 on the CPU (or the GPU when there is one),
with the AdamW a recipe builds (`optimizer_and_schedule`).
"""

from __future__ import annotations

import argparse
import time

import torch
from latent_dit import CHANNELS, CLASSES, SIDE, latent_dit
from recipe_step import recipe_adamw
from regression_target import target

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.flops import training_flops
from mmdit.model.tokens import Tokens


def grid_tokens(batch: int, grid: int, features: int, device: str) -> Tokens:
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    pos = torch.stack([rows, cols], -1).reshape(1, -1, 2).float().expand(batch, -1, -1)
    x = torch.randn(batch, grid * grid, features)
    return Tokens(x, pos, torch.ones(batch, grid * grid, dtype=torch.bool)).to(device)


def measure(name: str, model: MMDiT, tokens: Tokens, classes: int, steps: int) -> None:
    device = tokens.x.device
    optimizer = recipe_adamw(model.parameters())
    batch = tokens.batch_size
    labels = {next(iter(model.label_embedders)): torch.randint(0, classes, (batch,), device=device)}
    for step in range(steps + 3):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        out = model({"image": tokens}, torch.rand(batch, device=device), labels)["image"]
        (out - target(out)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flops = batch * training_flops(model, {"image": tokens.length}) / seconds
    print(
        f"{name:28s} {params / 1e6:7.2f} M params  batch {batch:4d} x {tokens.length:4d} tokens  "
        f"{seconds * 1000:8.1f} ms/step  {batch / seconds:8.1f} samples/s  "
        f"{batch * tokens.length / seconds:10.0f} tokens/s  {flops / 1e9:7.1f} GFLOP/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    digits = MMDiT(
        [StreamSpec("image", 4, positions="rope", axes=2)],
        width=128,
        heads=4,
        single_depth=4,
        labels={"digit": 10},
    ).to(device)
    measure("image-digits model (8x8, p2)", digits, grid_tokens(128, 4, 4, device), 10, args.steps)

    dit, patch = latent_dit("DiT-S/2")
    batch = 32 if device == "cuda" else 8  # 8 keeps a CPU step at a few seconds
    tokens = grid_tokens(batch, SIDE // patch, CHANNELS * patch**2, device)
    measure("DiT-S/2 (32x32x4 latents)", dit.to(device), tokens, CLASSES, args.steps)


if __name__ == "__main__":
    main()
