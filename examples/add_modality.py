"""Add a modality without editing mmdit: a toy "curves" stream of 1D signals, trained from a Python recipe.

Four steps, all in this file:
1. Subclass `ModalityAdapter`: encode / decode media <-> `Tokens`, layout, load / save, preview, datasets,
   and an honest metric (here: is the dominant frequency the one asked for?).
2. Make it findable by name: `@register` (this file), or, in your own package, an entry point in
   pyproject.toml, which mmdit discovers when installed:
       [project.entry-points."mmdit.modalities"]
       curves = "yourpkg.curves:CurveAdapter"
3. Write a recipe that uses `modality: curves` (a YAML file or, as here, a Python dict).
4. `fit(load_recipe(recipe))`: the run directory gets weights, eval.json, samples.png and loss.png.

    python examples/add_modality.py [RUN_DIR] [KEY=VALUE ...] [--progress]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import StreamSpec
from mmdit.model.tokens import Tokens
from mmdit.recipe import load_recipe
from mmdit.training.build import load_module
from mmdit.training.train import fit
from modalities import ModalityAdapter, register

CYCLES = (1, 2, 3)  # the classes: whole sine periods per curve


class SineCurves(Dataset):
    """Sines of 1, 2 or 3 cycles, random phase, amplitude in [0.5, 0.9]: media [length] in [-1, 1].
    750 curves from one seed; the first 600 are "train", the last 150 "heldout"."""

    classes = {"cycles": [str(c) for c in CYCLES]}

    def __init__(self, split: str, length: int = 32, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        cycles = rng.integers(0, len(CYCLES), size=750)
        phase, amplitude = rng.uniform(0, 2 * np.pi, 750), rng.uniform(0.5, 0.9, 750)
        t = np.arange(length) / length
        curves = amplitude[:, None] * np.sin(2 * np.pi * np.array(CYCLES)[cycles, None] * t + phase[:, None])
        rows = slice(0, 600) if split == "train" else slice(600, 750)
        self.media = torch.from_numpy(curves[rows]).float()
        self.labels = torch.from_numpy(cycles[rows])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"media": self.media[i], "labels": {"cycles": int(self.labels[i])}}


@register
class CurveAdapter(ModalityAdapter):
    """Curves [B, length] in [-1, 1] as tokens x [B, length/p, p], one patch of p samples per token, with
    1D RoPE over the patch index."""

    name = "curves"
    file_suffix = ".csv"

    def __init__(self, length: int = 32, patch_size: int = 4) -> None:
        if length % patch_size:
            raise ValueError(f"curve length {length} must be divisible by patch_size {patch_size}")
        self.length, self.patch_size = length, patch_size

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.patch_size, positions="rope", axes=1)

    def _positions(self, batch_size: int, tokens: int) -> Tensor:
        return torch.arange(tokens, dtype=torch.float32)[None, :, None].expand(batch_size, -1, -1).clone()

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Curves all have the adapter's length, so nothing is padded and `numbers` is unused."""
        p = self.patch_size
        if media.ndim != 2 or media.shape[1] % p:
            raise ValueError(f"curves must be [B, L] with L divisible by {p}, got {tuple(media.shape)}")
        x = rearrange(media, "b (n p) -> b n p", p=p)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return Tokens(x, self._positions(*x.shape[:2]).to(x.device), mask)

    def decode(self, tokens: Tokens) -> Tensor:
        """Exact inverse of `encode` for curves in [-1, 1]; a sampler's overshoot is clamped."""
        return rearrange(tokens.x, "b n p -> b (n p)").clamp(-1, 1)

    def layout(self, batch_size: int, numbers: Mapping | None = None, length: int | None = None) -> Tokens:
        """Zeros for `batch_size` curves of `length` samples (default the adapter's)."""
        n, rest = divmod(length or self.length, self.patch_size)
        if rest:
            raise ValueError(f"curve length {length} must be divisible by patch_size {self.patch_size}")
        x = torch.zeros(batch_size, n, self.patch_size)
        return Tokens(x, self._positions(batch_size, n), torch.ones(batch_size, n, dtype=torch.bool))

    def load(self, path: str | Path) -> Tensor:
        try:
            values = np.loadtxt(path, delimiter=",", ndmin=1, dtype=np.float32)
        except ValueError as err:
            raise ValueError(f"cannot read curve {path}: {err}") from err
        if values.ndim != 1 or not len(values) or len(values) % self.patch_size:
            raise ValueError(f"curve {path}: expected one row of samples (a multiple of {self.patch_size})")
        return torch.from_numpy(values)

    def save(self, item: Tensor, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savetxt(path, item.detach().cpu().numpy()[None], delimiter=",", fmt="%.9g")  # exact for float32
        return path

    def preview(self, media: Tensor, path: str | Path) -> Path:
        """media [B, length] -> a PNG of the curves overlaid in one plot."""
        figure = Figure(figsize=(4, 2.6), dpi=100)
        ax = figure.subplots()
        ax.plot(media.detach().cpu().numpy().T, lw=1, alpha=0.7)
        ax.set(ylim=(-1.05, 1.05), xlabel="sample", title=f"{len(media)} curves")
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
        return path

    def dataset(self, source: str | Mapping, split: str) -> Dataset:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if source != "sines":
            raise KeyError(f"unknown curves dataset {source!r}; valid sources: 'sines'")
        return SineCurves(split, self.length)

    def evaluate(self, generated: Tensor, labels: Mapping[str, Tensor], train, heldout) -> dict:
        """frequency_accuracy: share of curves whose strongest FFT bin is the requested cycle count;
        amplitude_error: mean distance of the fitted sine's amplitude from the data's range [0.5, 0.9]."""
        real = torch.stack([heldout[i]["media"] for i in range(len(heldout))])
        real_cycles = np.array([CYCLES[heldout[i]["labels"]["cycles"]] for i in range(len(heldout))])
        wanted = np.array(CYCLES)[labels["cycles"].cpu().numpy()]
        return {"generated": _scores(generated, wanted), "reference": _scores(real, real_cycles)}


def _scores(curves: Tensor, cycles: np.ndarray) -> dict[str, float]:
    spectrum = np.abs(np.fft.rfft(curves.detach().cpu().double().numpy(), axis=1))
    amplitude = 2 * spectrum[np.arange(len(cycles)), cycles] / curves.shape[1]
    return {
        "frequency_accuracy": float((spectrum.argmax(axis=1) == cycles).mean()),
        "amplitude_error": float(np.abs(amplitude - amplitude.clip(0.5, 0.9)).mean()),
        "samples": len(cycles),
    }


def main(argv: list[str]) -> None:
    """Train the curves recipe (about 30 s on a CPU), print eval.json, draw 8 samples of each class."""
    run_dirs = [a for a in argv if not a.startswith("--") and "=" not in a]
    recipe = load_recipe(
        {
            "name": "curves-example",
            "run_dir": run_dirs[0] if run_dirs else "runs/curves-example",
            "streams": {"curve": {"modality": "curves", "options": {"length": 32, "patch_size": 4}}},
            "data": {"source": "sines", "batch_size": 64},
            "conditioning": {"labels": ["cycles"]},
            "model": {"width": 64, "heads": 4, "joint_depth": 0, "single_depth": 3},
            "optimizer": {"lr": 2e-3, "warmup_steps": 30},
            "ema": {"decay": 0.99},  # a few hundred steps: average over about the last hundred
            "sample": {"steps": 20, "sampler": "heun", "cfg": 2.0, "grid": 12},
            "trainer": {
                "max_steps": 600,
                "val_check_interval": 200,
                "check_val_every_n_epoch": None,
                "log_every_n_steps": 5,
                "enable_progress_bar": "--progress" in argv,
            },
        },
        overrides=[a for a in argv if "=" in a],
    )
    run_dir = fit(recipe)
    print(json.dumps(json.loads((run_dir / "eval.json").read_text()), indent=2))

    # Sampling from the exported weights (they name the modality "curves", found through the registry).
    module = load_module(run_dir / "weights.safetensors")
    for index, cycles in enumerate(CYCLES):
        curves = module.generate(8, {"cycles": torch.full((8,), index)})["curve"]
        print(f"wrote {module.adapters['curve'].preview(curves, run_dir / f'curves_{cycles}_cycles.png')}")


if __name__ == "__main__":
    main(sys.argv[1:])
