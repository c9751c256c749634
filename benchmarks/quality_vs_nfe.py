"""Quality against network evaluations: each sampler of a trained model at NFE 1, 2, 4, 8, 16, 32, 60.

    python benchmarks/quality_vs_nfe.py RUN_DIR_OR_WEIGHTS [--samplers euler heun dpmpp_2m]
        [--nfe 1 2 4 8 16 32 60] [--schedule uniform] [--cfg S] [--guidance-interval LO HI]
        [--cfg-schedule constant] [--samples N] [--out DIR]

NFE is counted as `mmdit eval` counts it (mmdit.objectives.guidance): network evaluations per sample, a
guided one counting two. For each sampler and NFE target the benchmark takes the most steps whose NFE does
not exceed the target (Heun calls the network twice per step but once for the last), finds it by a dry run
of the sampler that calls no network, and then judges that setting with `mmdit eval`'s evaluation
(mmdit.training.evaluate, the recipe's judge); a target that no step count reaches (1 NFE with guidance at
t = 1) is recorded as unreachable. The recipe's own sampling settings are judged too (the baseline), beside
the real held-out data (the reference row).

Writes quality_vs_nfe.json, quality_vs_nfe.png (one panel per metric) and quality_vs_nfe.md (the table)
to --out, by default the run directory (or the folder of the weights file).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmdit.objectives.guidance import GuidanceSchedule
from mmdit.training.build import load_module
from mmdit.training.evaluate import evaluate
from mmdit.training.module import DiffusionModule

NFE_TARGETS = (1, 2, 4, 8, 16, 32, 60)


def weights_of(path: Path) -> Path:
    """A run directory -> its weights.safetensors; a weights file (.safetensors, .ckpt) as it is."""
    if path.is_dir():
        path = path / "weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a run directory or a weights file")
    return path


def planned_nfe(
    module: DiffusionModule, sampler: str, steps: int, schedule: str, guidance: GuidanceSchedule
) -> int:
    """The NFE per sample of one setting, from a dry run of the sampler on a stand-in for the network."""
    nfe = 0

    def stand_in(x, t):
        nonlocal nfe
        nfe += 2 if bool((guidance.scale_at(t) != 1.0).any()) else 1
        return {s: torch.zeros_like(v) for s, v in x.items()}

    module.objective.sample(stand_in, {"x": torch.zeros(1, 1, 1)}, steps, sampler, schedule=schedule)
    return nfe


def steps_for(module: DiffusionModule, sampler: str, target: int, schedule: str, guidance) -> int | None:
    """The most steps whose NFE is at most `target`; None when even one step costs more."""
    best = None
    for steps in range(1, target + 1):
        if planned_nfe(module, sampler, steps, schedule, guidance) > target:
            break
        best = steps
    return best


def measure(args: argparse.Namespace) -> dict:
    weights = weights_of(Path(args.weights))
    module = load_module(weights)
    settings = module.recipe.sample
    cfg = settings.cfg if args.cfg is None else args.cfg
    interval = list(settings.guidance_interval if args.guidance_interval is None else args.guidance_interval)
    cfg_schedule = args.cfg_schedule or settings.cfg_schedule
    schedule = args.schedule or settings.schedule
    guidance = GuidanceSchedule(cfg, tuple(interval), cfg_schedule)
    guided = dict(cfg=cfg, guidance_interval=interval, cfg_schedule=cfg_schedule, samples=args.samples)
    samplers = args.samplers or list(module.objective.samplers)
    baseline = evaluate(module, samples=args.samples, show_progress=False)
    rows = []
    for sampler in samplers:
        judged = set()  # step counts already judged: two targets may round down to the same one
        for target in args.nfe:
            steps = steps_for(module, sampler, target, schedule, guidance)
            row = {"sampler": sampler, "schedule": schedule, "target_nfe": target, "steps": steps}
            if steps in judged:
                continue
            judged.add(steps)
            if steps is None:
                rows.append({**row, "nfe": None, "generated": None, "seconds": None})
                continue
            start = time.perf_counter()
            report = evaluate(
                module, steps=steps, method=sampler, schedule=schedule, show_progress=False, **guided
            )
            seconds = round(time.perf_counter() - start, 2)
            nfe = report["sampling"]["nfe"]
            if nfe != planned_nfe(module, sampler, steps, schedule, guidance):
                raise RuntimeError(f"{sampler} {steps} steps: the dry run planned a different NFE than {nfe}")
            rows.append({**row, "nfe": nfe, "generated": report["generated"], "seconds": seconds})
            print(
                f"{sampler:9s} NFE {nfe:3d} ({steps} steps): " + metrics_line(report["generated"]), flush=True
            )
    return {
        "recipe": module.recipe.name,
        "weights": str(weights),
        "guidance": {"cfg": cfg, "guidance_interval": interval, "cfg_schedule": cfg_schedule},
        "baseline": {"sampling": baseline["sampling"], "generated": baseline["generated"]},
        "reference": baseline["reference"],
        "rows": rows,
    }


def metrics_line(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "samples")


def metric_names(result: dict) -> list[str]:
    return [k for k in result["reference"] if k != "samples"]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metric_names(result)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    samplers = dict.fromkeys(row["sampler"] for row in result["rows"])
    for ax, name in zip(axes[0], names, strict=True):
        for sampler in samplers:
            points = [
                (r["nfe"], r["generated"][name])
                for r in result["rows"]
                if r["sampler"] == sampler and r["nfe"]
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=sampler)
        base, s = result["baseline"], result["baseline"]["sampling"]
        label = f"recipe: {s['sampler']} {s['steps']} steps, {s['nfe']} NFE"
        ax.axhline(base["generated"][name], color="gray", linestyle=":", label=label)
        ax.axhline(result["reference"][name], color="black", linestyle="--", label="real held-out data")
        ax.set_xscale("log", base=2)
        if "distance" in name:  # distances span orders of magnitude from 1 NFE to many
            ax.set_yscale("log")
        ax.set_xlabel("NFE per sample")
        ax.set_title(name)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['recipe']}: quality against network evaluations (cfg {result['guidance']['cfg']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict) -> str:
    """The markdown table: one row per sampler and NFE target, then the recipe's settings and real data."""
    names = metric_names(result)
    lines = [
        "| sampler | schedule | steps | NFE | " + " | ".join(names) + " | seconds |",
        "|---" * (len(names) + 5) + "|",
    ]
    for row in result["rows"]:
        if row["nfe"] is None:
            cells = ["", f"unreachable (target {row['target_nfe']})", *[""] * len(names), ""]
        else:
            cells = [
                str(row["steps"]),
                str(row["nfe"]),
                *(f"{row['generated'][n]:.4g}" for n in names),
                str(row["seconds"]),
            ]
        lines.append(f"| {row['sampler']} | {row['schedule']} | " + " | ".join(cells) + " |")
    base, s = result["baseline"], result["baseline"]["sampling"]
    values = " | ".join(f"{base['generated'][n]:.4g}" for n in names)
    setting = f"| recipe's {s['sampler']} | {s['schedule']} | {s['steps']} | {s['nfe']}"
    lines.append(f"{setting} | {values} | {s['seconds']} |")
    real = " | ".join(f"{result['reference'][n]:.4g}" for n in names)
    lines.append(f"| real held-out data | | | | {real} | |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", help="a run directory (its weights.safetensors) or a .safetensors / .ckpt")
    p.add_argument("--samplers", nargs="+", help="default: every sampler of the model's objective")
    p.add_argument("--nfe", nargs="+", type=int, default=list(NFE_TARGETS), help="NFE targets per sample")
    p.add_argument("--schedule", help="time schedule (default: the recipe's)")
    p.add_argument("--cfg", type=float, help="guidance scale (default: the recipe's)")
    p.add_argument("--guidance-interval", nargs=2, type=float, metavar=("LO", "HI"))
    p.add_argument("--cfg-schedule", choices=["constant", "linear"])
    p.add_argument("--samples", type=int, help="items judged per setting (default: the recipe's eval)")
    p.add_argument("--out", help="folder for the JSON, PNG and table (default: the run directory)")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    result = measure(args)
    out = Path(args.out) if args.out else weights_of(Path(args.weights)).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality_vs_nfe.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "quality_vs_nfe.png")
    (out / "quality_vs_nfe.md").write_text(table(result))
    print(f"wrote quality_vs_nfe.json, .png and .md to {out}")
    return out


if __name__ == "__main__":
    main()
