"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.export import export_weights
from mmdit.training.module import DiffusionModule

TINY_MODEL = ["model.width=32", "model.heads=2", "model.single_depth=1"]
"""The image-digits network at its smallest, as the tests train it."""


@pytest.fixture(scope="session")
def teacher_export(tmp_path_factory) -> Path:
    """An untrained tiny image-digits export: what a distillation recipe's `distill.teacher` reads. Its
    weights are all random (adaLN-Zero's zeros would make its velocity 0 everywhere), so its flow curves
    and its guidance matters."""
    torch.manual_seed(0)
    recipe = load_recipe("image-digits", TINY_MODEL)
    module = DiffusionModule(recipe, {"digit": [str(d) for d in range(10)]}, build_adapters(recipe))
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.normal_(0.0, 0.2)
    return export_weights(module, tmp_path_factory.mktemp("teacher") / "weights.safetensors")
