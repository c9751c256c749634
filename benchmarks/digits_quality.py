"""The image-digits quality run: train the default recipe through `mmdit fit`, time it, print its eval.

    python benchmarks/digits_quality.py [key=value ...]

Prints wall-clock seconds of the whole fit (training, previews, export, evaluation) and eval.json's rows;
writes the run to runs/benchmark-digits/. Targets (issue #2): generated-digit accuracy >= 0.95 and a Fréchet
distance at most twice the reference row's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmdit.recipe import load_recipe
from mmdit.train import fit


def main(overrides: list[str]) -> None:
    recipe = load_recipe("image-digits", ["run_dir=runs/benchmark-digits", *overrides])
    start = time.perf_counter()
    run_dir = fit(recipe)
    seconds = time.perf_counter() - start
    report = json.loads((Path(run_dir) / "eval.json").read_text())
    generated, reference = report["generated"], report["reference"]
    ratio = generated["frechet_distance"] / reference["frechet_distance"]
    print(f"fit + eval: {seconds:.0f} s ({recipe.trainer.max_steps} steps)")
    for row, scores in (("generated", generated), ("reference", reference)):
        print(f"{row}: accuracy {scores['accuracy']:.3f}, Fréchet distance {scores['frechet_distance']:.2f}")
    print(f"FD ratio generated / reference: {ratio:.2f} (target <= 2); accuracy target >= 0.95")


if __name__ == "__main__":
    main(sys.argv[1:])
