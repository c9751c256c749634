"""The mesh-shapes quality run: train the default recipe through `mmdit fit`, time it, print its eval.

    python benchmarks/mesh_quality.py [key=value ...]

Run `mmdit prepare mesh-shapes` first so that encoding the bundled shapes (cached, once) is not timed.
Prints wall-clock seconds of the whole fit (training, previews, export, evaluation) and eval.json's rows;
writes the run to runs/benchmark-mesh/. Targets (issue #5): fit <= 20 min on the 2-core CPU, >= 90% of
generated meshes watertight, class accuracy >= 80%, 1-NNA-CD reported beside the reference row (50% ideal).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmdit.recipe import load_recipe
from mmdit.train import fit

METRICS = ("accuracy", "watertight", "mmd_cd", "cov_cd", "one_nna_cd")


def main(overrides: list[str]) -> None:
    recipe = load_recipe("mesh-shapes", ["run_dir=runs/benchmark-mesh", *overrides])
    start = time.perf_counter()
    run_dir = fit(recipe)
    seconds = time.perf_counter() - start
    report = json.loads((Path(run_dir) / "eval.json").read_text())
    print(f"fit + eval: {seconds:.0f} s ({recipe.trainer.max_steps} steps)")
    for row in ("generated", "reference"):
        print(f"{row:9s} " + "  ".join(f"{m} {report[row][m]:.4g}" for m in METRICS))
    print("targets: watertight >= 0.9, accuracy >= 0.8, 1-NNA-CD -> 0.5")


if __name__ == "__main__":
    main(sys.argv[1:])
