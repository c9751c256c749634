"""`mmdit convert {dit,sd3} SRC DST.safetensors`: foreign checkpoints into mmdit's backbone.

SRC is a checkpoint file (.pt / .pth / .bin / .ckpt / .safetensors: a raw state dict, or DiT's training
checkpoint {"model", "ema", ...}, whose EMA weights are taken) or a diffusers model folder (config.json +
diffusion_pytorch_model*.safetensors; a pipeline folder's `transformer/` is found too).

The output holds mmdit's state dict and, in its metadata, the backbone's description ("backbone"), so
`load_backbone` rebuilds it; a converted DiT also gets a recipe (latent image stream, Gaussian diffusion with
DiT's sampling settings), so `mmdit sample` draws from it like from a native export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from mmdit.contract import StreamSpec
from mmdit.convert.dit import dit_conversion
from mmdit.convert.rules import Rule, apply
from mmdit.convert.sd3 import sd3_conversion
from mmdit.model.backbone import MMDiT
from mmdit.weights_files import read_checkpoint, read_safetensors

KINDS = ("dit", "sd3")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """A checkpoint file or diffusers folder -> (state dict, diffusers config or None)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        folder = path / "transformer" if (path / "transformer" / "config.json").exists() else path
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{path} is a folder without a diffusers config.json")
        files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{folder} holds no diffusion_pytorch_model*.safetensors")
        state = {k: v for f in files for k, v in read_safetensors(f)[0].items()}
        return state, json.loads((folder / "config.json").read_text())
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0], None
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path}: expected a .safetensors or {'/'.join(CHECKPOINT_SUFFIXES)} file or a folder"
        )
    loaded = read_checkpoint(path)
    if isinstance(loaded, dict) and "ema" in loaded:
        loaded = loaded["ema"]
    elif isinstance(loaded, dict) and "model" in loaded and isinstance(loaded["model"], dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(f"{path} is not a state dict of tensors (nor a dict with 'ema' or 'model')")
    return loaded, None


def build_backbone(description: dict[str, Any]) -> MMDiT:
    """An MMDiT from a converter's description (also stored in the output's metadata)."""
    specs = [
        StreamSpec(**{**s, "grid": tuple(s["grid"]) if s.get("grid") else None})
        for s in description["streams"]
    ]
    return MMDiT(specs, **description["model"])


def _describe(kind: str, state: dict, config: dict | None, heads: int | None) -> tuple[dict, list[Rule]]:
    """Converter description + rules, with the stream specs the backbone needs."""
    if kind == "dit":
        description, rules = dit_conversion(state, config, heads)
        image, p = description["image"], description["image"]["patch_size"]
        features = image["channels"] * p * p
        out_features = features * (2 if description["learn_sigma"] else 1)
        grid = [image["size"][0] // p, image["size"][1] // p]
        description["streams"] = [
            dict(
                name="image",
                features=features,
                out_features=out_features,
                positions="sincos",
                axes=2,
                grid=grid,
            )
        ]
        description["model"]["labels"] = {"class": description["classes"]}
        return description, rules
    if config is None:
        raise ValueError("an SD3 checkpoint must be a diffusers folder: its config.json is needed")
    description, rules = sd3_conversion(state, config)
    image, p = description["image"], description["image"]["patch_size"]
    description["streams"] = [
        dict(name="image", features=image["channels"] * p * p, out_features=image["out_channels"] * p * p,
             positions="sincos", axes=2, grid=image["grid"]),
        dict(name="text", features=description["text_features"], positions="none"),
    ]  # fmt: skip
    description["model"]["pooled"] = {"pooled": description["pooled_features"]}
    return description, rules


def convert_state(
    kind: str, state: dict[str, Tensor], config: dict | None = None, heads: int | None = None
) -> tuple[MMDiT, dict[str, Any], list[Rule]]:
    """A foreign state dict -> (mmdit backbone holding its weights, description, rules)."""
    if kind not in KINDS:
        raise KeyError(f"unknown checkpoint kind {kind!r}; known: {', '.join(KINDS)}")
    description, rules = _describe(kind, state, config, heads)
    model = build_backbone(description)
    model.load_state_dict(apply(rules, state, model.state_dict(), kind))
    return model, description, rules


def dit_recipe(description: dict[str, Any], source: str) -> dict[str, Any]:
    """The recipe a converted DiT samples with: DiT's diffusion (1000 steps, ε, learned variance) respaced to
    250 DDPM steps, classifier-free guidance 4.0 on the first 3 latent channels (DiT's sample.py)."""
    model = {k: description["model"][k] for k in ("joint_depth", "single_depth", "width", "heads", "qk_norm",
                                                  "time_frequency_shift", "mlp_norm_eps")}  # fmt: skip
    return {
        "name": "dit-converted",
        "description": f"converted from {source}",
        "streams": {"image": {"modality": "latent", "options": description["image"]}},
        "data": {"source": {"folder": "latents"}},
        "conditioning": {"labels": ["class"], "dropout": 0.1},
        "model": model,
        "objective": {"type": "gaussian", "steps": 1000, "prediction": "epsilon",
                      "learn_sigma": description["learn_sigma"]},
        "sample": {"sampler": "ddpm", "steps": 250, "cfg": 4.0, "guided_channels": 3},
        "optimizer": {"lr": 1e-4, "weight_decay": 0.0},
        "ema": {"decay": 0.9999},
    }  # fmt: skip


def convert(kind: str, source: str | Path, destination: str | Path, heads: int | None = None) -> Path:
    """Convert the checkpoint at `source` and write `destination` (.safetensors)."""
    from mmdit.recipe import load_recipe, to_yaml

    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise ValueError(f"{destination}: the converted weights are written as .safetensors")
    state, config = load_checkpoint(source)
    model, description, _ = convert_state(kind, state, config, heads)
    metadata = {"backbone": json.dumps({"streams": description["streams"], "model": description["model"]})}
    if kind == "dit":
        metadata["recipe"] = to_yaml(load_recipe(dit_recipe(description, str(source))))
        metadata["classes"] = json.dumps({"class": [str(i) for i in range(description["classes"])]})
    destination.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, destination, metadata=metadata)
    return destination


def load_backbone(path: str | Path) -> MMDiT:
    """The MMDiT stored by `convert` (any kind), with its weights."""
    state, metadata = read_safetensors(path)
    if "backbone" not in metadata:
        raise ValueError(
            f"{path}: no backbone description in its metadata; was it written by `mmdit convert`?"
        )
    model = build_backbone(json.loads(metadata["backbone"]))
    model.load_state_dict(state)
    return model
