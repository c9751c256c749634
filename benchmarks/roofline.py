"""How close a training step runs to this machine's matrix-product limit, measured in one process.

    python benchmarks/roofline.py [--sizes DiT-S/2 DiT-B/2] [--precision 32 bf16-mixed] [--batch 8]
                                  [--steps 5] [--rounds 3] [--kinds mmdit diffusers] [--compile]
                                  [--recipe NAME [--overrides "key=value ..."]] [--no-profile]

For each size and precision: (1) the limit: every matrix product one training step multiplies (recorded
from the step itself, `gemm_limit.recorded_gemms`), each distinct shape timed alone in the step's dtype
(bf16 under bf16-mixed) — the fastest shape's rate is the limit the fractions are taken against, and the
mix column is the rate of all the step's products back to back; (2) a step of each model kind (ours;
diffusers' `DiTTransformer2DModel` of the same size, `versus_diffusers.trainer`; forward + backward + AdamW
on 32×32×4 latents), the kinds taking steps in turn for `--rounds` rounds so a machine whose speed drifts
slows them alike; achieved FLOP/s = batch × 6 × the multiply-accumulates of `mmdit.model.flops` / the
median step; (3) with profiling on, a breakdown of our step by kernel family (`step_profile`).
`--recipe` does the same for a recipe's own training step (`recipe_steps.variant`), counting its FLOPs from
the recorded products. On a GPU the table adds the MFU against the card's dense bf16 peak.
Results and the command that reproduced them: docs/performance.md#roofline.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from gemm_limit import GemmLimit, gemm_limit, recorded_gemms
from gpu_throughput import peak_flops
from latent_dit import SIDE
from recipe_steps import variant
from step_profile import FAMILIES, step_breakdown
from versus_diffusers import DEVICE, trainer

from mmdit.model.flops import training_flops
from mmdit.model.presets import preset

DTYPES = {"32": torch.float32, "bf16-mixed": torch.bfloat16}


def median_steps(steps: dict[str, Callable[[], float]], rounds: int, per_round: int) -> dict[str, float]:
    """{kind: step()} -> {kind: median step seconds}: 3 warm-up steps each, then the kinds take `per_round`
    steps in turn for `rounds` rounds."""
    for step in steps.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for _ in range(rounds):
        for kind, step in steps.items():
            times[kind] += [step() for _ in range(per_round)]
    return {kind: statistics.median(values) for kind, values in times.items()}


def card_peak() -> float | None:
    """The GPU's dense bf16 peak FLOP/s where `gpu_throughput` knows the card, else None (and on the CPU)."""
    return peak_flops(torch.cuda.get_device_name()) if DEVICE == "cuda" else None


def print_limit(limit: GemmLimit, precision: str) -> None:
    peak = card_peak()
    card = f"; card's dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else ""
    print(
        f"  limit ({precision}): fastest shape {limit.best_flops_per_s / 1e9:.1f} GFLOP/s; the step's "
        f"{limit.flops / 1e9:.1f} GFLOP of products alone {limit.seconds * 1000:.1f} ms "
        f"= {limit.mix_flops_per_s / 1e9:.1f} GFLOP/s{card}"
    )


def print_step(kind: str, seconds: float, flops: float, limit: GemmLimit) -> None:
    achieved, peak = flops / seconds, card_peak()
    mfu = f"  MFU {achieved / peak:6.1%}" if peak else ""
    print(
        f"  {kind:10s} {seconds * 1000:9.1f} ms/step  {achieved / 1e9:8.1f} GFLOP/s  "
        f"{achieved / limit.best_flops_per_s:6.1%} of the fastest GEMM  "
        f"{achieved / limit.mix_flops_per_s:6.1%} of the step's GEMMs alone{mfu}"
    )


def print_breakdown(step) -> None:
    seconds = step_breakdown(step)
    total = sum(seconds.values())
    parts = "  ".join(f"{f} {seconds[f] / total:5.1%}" for f in FAMILIES)
    print(f"  profile of ours ({total * 1000:.0f} ms profiled/step): {parts}")


def preset_rows(args) -> None:
    for size in args.sizes:
        for precision in args.precision:
            tokens = (SIDE // preset(size)["patch_size"]) ** 2
            print(f"{size}, batch {args.batch} x {tokens} tokens, {precision}:")
            built = {k: trainer(k, size, args.batch, args.compile, precision, "each") for k in args.kinds}
            steps = {kind: step for kind, (_, step) in built.items()}
            limit = gemm_limit(recorded_gemms(steps["mmdit"]), DTYPES[precision], torch.device(DEVICE))
            print_limit(limit, precision)
            flops = args.batch * training_flops(built["mmdit"][0], {"image": tokens})
            for kind, seconds in median_steps(steps, args.rounds, args.steps).items():
                print_step(kind, seconds, flops, limit)
            if args.profile:
                print_breakdown(steps["mmdit"])


def recipe_rows(args) -> None:
    module, step = variant(args.recipe, args.overrides, args.steps)
    precision = module.recipe.trainer.precision
    dtype = torch.bfloat16 if "bf16" in str(precision) else torch.float32
    gemms = recorded_gemms(step)
    limit = gemm_limit(gemms, dtype, torch.device("cpu"))
    print(f"{args.recipe} {args.overrides}, trainer.precision {precision}:")
    print_limit(limit, str(precision))
    seconds = median_steps({"recipe": step}, args.rounds, args.steps)["recipe"]
    print_step("recipe", seconds, limit.flops, limit)
    if args.profile:
        print_breakdown(step)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["DiT-S/2", "DiT-B/2"])
    parser.add_argument("--precision", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", choices=["mmdit", "diffusers"], default=["mmdit", "diffusers"])
    parser.add_argument("--compile", action="store_true", help="our blocks and diffusers' model compiled")
    parser.add_argument("--recipe", help="time this recipe's training step instead of the presets")
    parser.add_argument("--overrides", default="", help='the recipe\'s overrides, e.g. "data.batch_size=64"')
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    if "mmdit" not in args.kinds:
        parser.error("--kinds must include mmdit: the limit is taken from its step")
    if DEVICE == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 steps and their limit both use TF32
    print(f"torch {torch.__version__} on {DEVICE}, {torch.get_num_threads()} threads")
    recipe_rows(args) if args.recipe else preset_rows(args)


if __name__ == "__main__":
    main()
