"""The audio-notes quality run: train the default recipe through `mmdit fit`, time it, print its eval.

    python benchmarks/audio_quality.py [key=value ...]

Prints wall-clock seconds of the whole fit (training, previews, export, evaluation) and eval.json's rows;
writes the run to runs/benchmark-audio/. Targets (issue #4): the fit within 15 minutes on a 2-core CPU and
at least 80% of generated notes within ±50 cents of the requested pitch (beside the real clips' score).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmdit.recipe import load_recipe
from mmdit.train import fit


def main(overrides: list[str]) -> None:
    recipe = load_recipe("audio-notes", ["run_dir=runs/benchmark-audio", *overrides])
    start = time.perf_counter()
    run_dir = fit(recipe)
    seconds = time.perf_counter() - start
    report = json.loads((Path(run_dir) / "eval.json").read_text())
    print(f"fit + eval: {seconds:.0f} s ({recipe.trainer.max_steps} steps)")
    for row in ("generated", "reference"):
        scores = report[row]
        print(
            f"{row}: pitch within ±50 cents {scores['pitch_accuracy']:.3f}, median error "
            f"{scores['median_cents']:.1f} cents, Fréchet distance {scores['frechet_distance']:.1f}"
        )
    print("targets: fit <= 900 s on 2 threads, generated pitch accuracy >= 0.80")


if __name__ == "__main__":
    main(sys.argv[1:])
