"""Weights for sharing: the EMA model as `.safetensors`, with the resolved recipe and the class names in the
file's metadata, so that one file is enough to sample and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmdit.recipe import to_yaml
from mmdit.training.build import load_module
from mmdit.training.module import DiffusionModule


def export_weights(module: DiffusionModule, path: str | Path) -> Path:
    """Write `module.model`'s weights (the EMA weights once training has ended, since Lightning's
    EMAWeightAveraging copies them into the model then) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}
    metadata = {"format": "mmdit", "recipe": to_yaml(module.recipe), "classes": json.dumps(module.classes)}
    save_file(tensors, path, metadata=metadata)
    return path


def export_checkpoint(checkpoint: str | Path, path: str | Path) -> Path:
    """A Lightning `.ckpt` -> `.safetensors`. The checkpoint's state dict holds the EMA weights when EMA was
    on (EMAWeightAveraging stores the training weights aside, under `current_model_state`)."""
    module = load_module(checkpoint)
    return export_weights(module.to(torch.float32), path)
