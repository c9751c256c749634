"""benchmarks/quality_vs_nfe.py end to end on a tiny run: the steps it picks for each NFE target, the NFE
`mmdit eval` counts, its numbers equal to `evaluate`'s, and the JSON, PNG and table it writes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from mmdit.cli import main as mmdit
from mmdit.training.build import load_module
from mmdit.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=32",
    "trainer.max_steps=4",
    "optimizer.warmup_steps=1",
    "trainer.val_check_interval=4",
    "trainer.enable_progress_bar=false",
    "sample.steps=2",
    "sample.grid=10",
    "eval.samples=12",
]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("quality_vs_nfe", ROOT / "benchmarks" / "quality_vs_nfe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    assert mmdit(["fit", "image-digits", *TINY, f"run_dir={run_dir}"]) == 0  # the recipe's cfg 1.5
    return run_dir


def test_the_curve_of_a_tiny_run(benchmark, run_dir, tmp_path):
    out = benchmark.main(
        [str(run_dir), "--samplers", "euler", "heun", "--nfe", "1", "2", "4", "6", "--out", str(tmp_path)]
    )
    result = json.loads((out / "quality_vs_nfe.json").read_text())
    picked = {(r["sampler"], r["target_nfe"]): (r["steps"], r["nfe"]) for r in result["rows"]}
    # Guided everywhere, every call costs 2: euler takes target / 2 steps; heun 1 step (1 call), 2 steps
    # (3 calls, 6 NFE); 1 NFE is out of reach. Heun's 1 step, the best for 2 and for 4 NFE, is judged once.
    assert picked == {
        ("euler", 1): (None, None),
        ("euler", 2): (1, 2),
        ("euler", 4): (2, 4),
        ("euler", 6): (3, 6),
        ("heun", 1): (None, None),
        ("heun", 2): (1, 2),
        ("heun", 6): (2, 6),
    }
    assert result["baseline"]["sampling"]["nfe"] == 2 * 3  # the recipe's heun, 2 steps
    # The benchmark's numbers are `mmdit eval`'s for the same setting.
    row = next(r for r in result["rows"] if r["sampler"] == "euler" and r["target_nfe"] == 4)
    report = evaluate(
        load_module(run_dir / "weights.safetensors"), steps=2, method="euler", show_progress=False
    )
    assert row["generated"] == report["generated"]
    assert report["sampling"]["nfe"] == 4 and report["generated"]["samples"] == 12
    with Image.open(out / "quality_vs_nfe.png") as image:
        assert image.format == "PNG" and image.width > 500
    table = (out / "quality_vs_nfe.md").read_text().splitlines()
    assert table[0] == "| sampler | schedule | steps | NFE | accuracy | frechet_distance | seconds |"
    assert len(table) == 2 + 7 + 2  # header, rule, the seven settings, the recipe's and the real data
    assert table[3].startswith("| euler | uniform | 1 | 2 | ")
    assert "unreachable (target 1)" in table[2]


def test_a_guidance_interval_makes_one_nfe_reachable(benchmark, run_dir, tmp_path):
    """Guidance only for t <= 0.6: the first call (t = 1) is unguided, so one Euler step is 1 NFE."""
    argv = [str(run_dir), "--samplers", "euler", "--nfe", "1", "3", "--guidance-interval", "0", "0.6"]
    result = json.loads((benchmark.main([*argv, "--out", str(tmp_path)]) / "quality_vs_nfe.json").read_text())
    # Euler at 2 steps calls at t = 1 (1 NFE) and 0.5 (2 NFE).
    assert [(r["steps"], r["nfe"]) for r in result["rows"]] == [(1, 1), (2, 3)]
