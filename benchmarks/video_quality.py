"""The video-moving-digits quality run: train the default recipe through `mmdit fit`, time it, print its eval.

    python benchmarks/video_quality.py [key=value ...]

Prints wall-clock seconds of the whole fit (training, previews, export, evaluation) and eval.json's rows;
writes the run to runs/benchmark-video/. Targets (issue #6): per-frame digit accuracy >= 0.7 and direction
accuracy >= 0.7, with the real held-out clips' scores beside them; the fit within 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mmdit.recipe import load_recipe
from mmdit.train import fit


def main(overrides: list[str]) -> None:
    recipe = load_recipe("video-moving-digits", ["run_dir=runs/benchmark-video", *overrides])
    start = time.perf_counter()
    run_dir = fit(recipe)
    seconds = time.perf_counter() - start
    report = json.loads((Path(run_dir) / "eval.json").read_text())
    print(f"fit + eval: {seconds:.0f} s ({recipe.trainer.max_steps} steps)")
    for row in ("generated", "reference"):
        scores = report[row]
        print(
            f"{row}: frame digit accuracy {scores['frame_digit_accuracy']:.3f}, same digit in all frames "
            f"{scores['same_digit_share']:.3f}, direction accuracy {scores['direction_accuracy']:.3f}"
        )
    print("targets: frame digit accuracy >= 0.7, direction accuracy >= 0.7")


if __name__ == "__main__":
    main(sys.argv[1:])
