"""Add a modality without editing mmdit: "curves", 1-D signals [1, length] in [-1, 1], from a Python recipe.
`GridAdapter` does the tokens, positions, layouts, previews and folder datasets of any gridded signal; a
modality adds its file format, its data and its judge. In a package of your own, register it with an entry
point instead of the decorator: [project.entry-points."mmdit.modalities"] curves = "yourpkg:CurveAdapter".

    python examples/add_modality.py [KEY=VALUE ...] [--progress]     # e.g. run_dir=runs/curves
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from mmdit.recipe import load_recipe
from mmdit.training.train import fit
from modalities import GridAdapter, register

CYCLES = (1, 2, 3)  # the classes: whole sine periods per curve


class SineCurves(list):
    """600 train or 150 held-out sines of 1-3 cycles, random phase and amplitude in [0.5, 0.9]: items
    {"media": [1, length], "labels": {"cycles": class}} (a list of items is a map-style dataset)."""

    classes = {"cycles": [str(c) for c in CYCLES]}

    def __init__(self, split: str, length: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        cycles, phase, amplitude = rng.integers(0, 3, 750), rng.uniform(0, 7, 750), rng.uniform(0.5, 0.9, 750)
        t = np.arange(length) / length
        curves = amplitude[:, None] * np.sin(2 * np.pi * np.array(CYCLES)[cycles, None] * t + phase[:, None])
        rows = range(600) if split == "train" else range(600, 750)
        media = torch.from_numpy(curves).float()
        super().__init__({"media": media[i, None], "labels": {"cycles": int(cycles[i])}} for i in rows)


@register
class CurveAdapter(GridAdapter):
    name, file_suffix, bundled = "curves", ".csv", ("sines",)

    def __init__(self, length: int = 32, patch_size: int = 4) -> None:
        super().__init__(channels=1, patch_size=patch_size, size=[length])

    def from_values(self, values):
        return values.clamp(-1, 1)  # a sampler may overshoot the data's range

    def load(self, path):
        return torch.from_numpy(np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32))

    def save(self, item, path):
        np.savetxt(path, item.cpu().numpy(), delimiter=",", fmt="%.9g")  # exact for float32
        return path

    def dataset(self, source, split, seed=0):
        if source == "sines":
            return SineCurves(split, self.size[0], seed)
        return super().dataset(source, split, seed)  # {"folder": PATH, "label": NAME} of .csv files

    def evaluate(self, generated, labels, train, heldout):
        """frequency_accuracy: share of curves whose strongest FFT bin is the cycle count asked for."""
        real = torch.stack([item["media"] for item in heldout])
        truth = torch.tensor([item["labels"]["cycles"] for item in heldout])
        rows = {"generated": (generated, labels["cycles"]), "reference": (real, truth)}
        return {row: {"frequency_accuracy": _hits(c, k), "samples": len(k)} for row, (c, k) in rows.items()}


def _hits(curves: torch.Tensor, classes: torch.Tensor) -> float:
    peaks = np.abs(np.fft.rfft(curves[:, 0].double().numpy(), axis=1)).argmax(axis=1)
    return float((peaks == np.array(CYCLES)[classes.numpy()]).mean())


def main(argv: list[str]) -> None:
    """Train the curves recipe (about 30 s on a CPU) and print its eval.json."""
    recipe = load_recipe(
        {
            "name": "curves-example",
            "run_dir": "runs/curves-example",
            "streams": {"curve": {"modality": "curves", "options": {"length": 32, "patch_size": 4}}},
            "data": {"source": "sines", "batch_size": 64},
            "conditioning": {"labels": ["cycles"]},
            "model": {"width": 64, "heads": 4, "single_depth": 3},
            "optimizer": {"lr": 2e-3, "warmup_steps": 30},
            "ema": {"decay": 0.99},  # a few hundred steps: average over about the last hundred
            "sample": {"steps": 20, "sampler": "heun", "cfg": 2.0, "grid": 12},
            "trainer": {"max_steps": 600, "val_check_interval": 200, "check_val_every_n_epoch": None},
        },
        overrides=[*(a for a in argv if "=" in a), f"trainer.enable_progress_bar={'--progress' in argv}"],
    )
    print(json.dumps(json.loads((fit(recipe) / "eval.json").read_text()), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
