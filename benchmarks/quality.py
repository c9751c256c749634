"""A recipe's quality run: train it through `mmdit fit`, time it, print its eval beside the issue's targets.

    python benchmarks/quality.py RECIPE [key=value ...]     # e.g. image-digits, audio-notes, unified-digits

Prints the wall-clock seconds of the whole fit (training, previews, export, evaluation) and every metric of
eval.json's two rows (generated, and real data as the reference); writes the run to runs/benchmark-RECIPE/.
For mesh-shapes, run `mmdit prepare mesh-shapes` first, so that encoding the shapes (cached) is not timed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmdit.recipe import load_recipe
from mmdit.training.train import fit

TARGETS = {
    "image-digits": "accuracy >= 0.95; Fréchet distance <= 2x the reference row's",
    "audio-notes": "fit <= 15 min on 2 cores; pitch_accuracy >= 0.80",
    "mesh-shapes": "fit <= 20 min on 2 cores; watertight >= 0.90; accuracy >= 0.80; one_nna_cd -> 0.5",
    "video-moving-digits": "fit <= 20 min; frame_digit_accuracy >= 0.70; direction_accuracy >= 0.70",
    "unified-digits": "fit <= 20 min on 2 cores; accuracy >= 0.85; understanding_accuracy >= 0.90",
}


def main(name: str, overrides: list[str]) -> None:
    recipe = load_recipe(name, [f"run_dir=runs/benchmark-{name}", *overrides])
    start = time.perf_counter()
    run_dir = fit(recipe)
    seconds = time.perf_counter() - start
    report = json.loads((Path(run_dir) / "eval.json").read_text())
    print(f"{recipe.name}: fit + eval {seconds:.0f} s ({recipe.trainer.max_steps} steps)")
    for row in ("generated", "reference"):
        print(f"{row:9s} " + "  ".join(f"{metric} {value:.4g}" for metric, value in report[row].items()))
    print(f"targets: {TARGETS.get(recipe.name, 'none recorded')}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
