"""mmdit's DiT against diffusers' DiTTransformer2DModel of the same size: training step time and peak memory.

    python benchmarks/versus_diffusers.py [--sizes DiT-S/2 DiT-B/2] [--batch 8] [--steps 5] [--rounds 3]
                                          [--compile] [--precision 32|bf16-mixed] [--interleaved]

Same inputs (32×32×4 latents, DiT's 256 px shape; 1000 classes; learned sigma), same threads, fp32 weights
and, with `--precision bf16-mixed`, both forwards under bf16 autocast (what Lightning's bf16-mixed does); a
step is forward + backward + AdamW. Each configuration runs in its own child process, so its peak resident
memory (CPU) or peak allocated memory (GPU) is its own; the parent prints the table and the ratio ours /
theirs.
The two run in turn for `--rounds` rounds and each one's time is the median over its rounds (each round's
figure is the median of its steps), so that a machine whose load drifts (other jobs) slows both alike.
With --interleaved both models live in this process and their steps alternate one by one (the issue's "side
by side, in one process"; the steadiest ratio on a machine whose speed drifts), without the memory columns.
With --compile both are also timed under torch.compile (ours: each block; theirs: the whole model, as the
diffusers docs suggest); compile time is excluded (warm-up steps).
--adamw picks the optimizer: `each` (default) steps each model with its own toolkit's AdamW, ours as a recipe
builds it (`optimizer_and_schedule`: torch's fused AdamW) and theirs as diffusers' training examples build it
(`torch.optim.AdamW(params, lr=...)`: torch's default, foreach); `fused` or `foreach` gives both the same.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from latent_dit import CHANNELS, CLASSES, SIDE, latent_dit
from recipe_step import recipe_adamw
from regression_target import target

from mmdit.model.presets import preset

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def build(kind: str, size: str, compiled: bool):
    """(model, step function) for `kind` "mmdit" or "diffusers" at preset `size`."""
    if kind == "mmdit":
        from mmdit.model.tokens import Tokens
        from modalities.common.patches import patchify

        model, patch = latent_dit(size, compiled)

        def forward(latents, steps, classes):
            x, pos = patchify(latents, patch)
            tokens = Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
            return model({"image": tokens}, steps / 1000, {"class": classes})["image"]

        return model, forward
    sizes = preset(size)
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(
        num_attention_heads=sizes["heads"],
        attention_head_dim=sizes["width"] // sizes["heads"],
        in_channels=CHANNELS,
        out_channels=2 * CHANNELS,
        num_layers=sizes["single_depth"],
        sample_size=SIDE,
        patch_size=sizes["patch_size"],
        num_embeds_ada_norm=CLASSES,
    )
    run = torch.compile(model) if compiled else model

    def forward(latents, steps, classes):
        return run(latents, timestep=steps, class_labels=classes).sample

    return model, forward


def adamw(kind: str, model: torch.nn.Module, choice: str) -> torch.optim.AdamW:
    """The AdamW that steps `kind`'s model under --adamw `choice` (each, fused or foreach)."""
    if choice == "each" and kind == "mmdit":
        return recipe_adamw(model.parameters())
    if choice == "each":
        return torch.optim.AdamW(model.parameters(), lr=1e-4)
    return torch.optim.AdamW(
        model.parameters(), lr=1e-4, fused=choice == "fused", foreach=choice == "foreach"
    )


def trainer(kind: str, size: str, batch: int, compiled: bool, precision: str, optimizer_choice: str):
    """(model, step): `step()` runs one timed training step of `kind` at `size` and returns its seconds."""
    torch.manual_seed(0)
    model, forward = build(kind, size, compiled)
    model.to(DEVICE).train()
    optimizer = adamw(kind, model, optimizer_choice)
    latents = torch.randn(batch, CHANNELS, SIDE, SIDE, device=DEVICE)
    classes = torch.randint(0, CLASSES, (batch,), device=DEVICE)

    def step() -> float:
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        timesteps = torch.randint(0, 1000, (batch,), device=DEVICE)
        with torch.autocast(DEVICE, torch.bfloat16, enabled=precision == "bf16-mixed"):
            out = forward(latents, timesteps, classes)
        (out.float() - target(out)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return model, step


def measure(
    kind: str, size: str, batch: int, steps: int, compiled: bool, precision: str, optimizer: str
) -> dict:
    _, step = trainer(kind, size, batch, compiled, precision, optimizer)
    times = [step() for _ in range(steps + 3)]  # three warm-up steps (compilation; the gates open)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if DEVICE == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"seconds": statistics.median(times[3:]), "peak_mib": peak, "device": DEVICE}


def interleaved(
    size: str, batch: int, steps: int, compiled: bool, precision: str, optimizer: str
) -> dict[str, float]:
    """Both models in this process, their steps alternating one by one: {kind: median step seconds}. A
    machine whose speed drifts slows both alike (peak memory needs separate processes: not measured)."""
    kinds = ("mmdit", "diffusers")
    steps_of = {kind: trainer(kind, size, batch, compiled, precision, optimizer)[1] for kind in kinds}
    times: dict[str, list[float]] = {kind: [] for kind in steps_of}
    for _ in range(steps + 3):
        for kind, step in steps_of.items():
            times[kind].append(step())
    return {kind: statistics.median(values[3:]) for kind, values in times.items()}


def median_round(runs: list[dict]) -> dict:
    """The median of rounds' step times, beside the largest peak memory of any round."""
    seconds = statistics.median(run["seconds"] for run in runs)
    return {"seconds": seconds, "peak_mib": max(run["peak_mib"] for run in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["DiT-S/2", "DiT-B/2"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--interleaved", action="store_true", help="one process, steps alternating")
    parser.add_argument("--adamw", choices=["each", "fused", "foreach"], default="each")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "SIZE", "COMPILED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, size, compiled = args.one
        measured = measure(kind, size, args.batch, args.steps, compiled == "1", args.precision, args.adamw)
        print(json.dumps(measured))
        return
    threads = torch.get_num_threads()
    protocol = "steps alternating in one process" if args.interleaved else f"{args.rounds} alternating rounds"
    print(
        f"torch {torch.__version__}, {threads} threads, precision {args.precision}, batch {args.batch}, "
        f"median of {args.steps} steps, {protocol}, AdamW: {args.adamw}"
    )
    print(f"{'model':10s} {'compile':8s} {'mmdit ms':>10s} {'diffusers ms':>13s} {'ratio':>6s} "
          f"{'mmdit MiB':>10s} {'diffusers MiB':>14s}")  # fmt: skip
    for size in args.sizes:
        for compiled in [False, True] if args.compile else [False]:
            if args.interleaved:
                times = interleaved(size, args.batch, args.steps, compiled, args.precision, args.adamw)
                ours, theirs = times["mmdit"], times["diffusers"]
                print(
                    f"{size:10s} {'yes' if compiled else 'no':8s} {ours * 1000:10.1f} "
                    f"{theirs * 1000:13.1f} {ours / theirs:6.2f} {'-':>10s} {'-':>14s}"
                )
                continue
            rounds: dict[str, list[dict]] = {"mmdit": [], "diffusers": []}
            for _ in range(args.rounds):
                for kind in rounds:
                    command = [sys.executable, __file__, "--one", kind, size, str(int(compiled))]
                    command += ["--batch", str(args.batch), "--steps", str(args.steps)]
                    command += ["--precision", args.precision, "--adamw", args.adamw]
                    done = subprocess.run(command, capture_output=True, text=True, check=True)
                    rounds[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            row = {kind: median_round(runs) for kind, runs in rounds.items()}
            ours, theirs = row["mmdit"], row["diffusers"]
            print(
                f"{size:10s} {'yes' if compiled else 'no':8s} {ours['seconds'] * 1000:10.1f} "
                f"{theirs['seconds'] * 1000:13.1f} {ours['seconds'] / theirs['seconds']:6.2f} "
                f"{ours['peak_mib']:10.0f} {theirs['peak_mib']:14.0f}"
            )


if __name__ == "__main__":
    main()
