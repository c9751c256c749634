"""Reading the weight files a user hands to mmdit, safely and with errors that name the file.

`.safetensors` holds tensors and string metadata only, so reading one never runs code. A torch checkpoint
(`.ckpt`, `.pt`, ...) is a pickle: it is read with torch's restricted unpickler (`weights_only=True`),
which builds tensors, containers and plain values and refuses every other global, so a crafted file
cannot run code; mmdit never unpickles a user's file any other way (Lightning's resume included).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from mmdit.errors import UserError

EXAMPLES = 3
"""Keys a mismatch message names per kind (missing, unexpected, other shape): a few, not a dump."""


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    return path


def read_safetensors(
    path: str | Path, device: str | torch.device = "cpu", what: str = "weights file"
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """A `.safetensors` file -> ({name: tensor on `device`}, metadata)."""
    return _read_safetensors(path, what, lambda f: {key: f.get_tensor(key) for key in f.keys()}, device)


def read_safetensors_metadata(path: str | Path, what: str = "weights file") -> dict[str, str]:
    """A `.safetensors` file's metadata, without reading its tensors."""
    return _read_safetensors(path, what, lambda f: None)[1]


def _read_safetensors(
    path: str | Path, what: str, tensors: Callable[[Any], Any], device: str | torch.device = "cpu"
) -> tuple[Any, dict[str, str]]:
    """(tensors(the open file), metadata) of a `.safetensors` file; any reader error names the file."""
    path = _existing(path, what)
    try:
        with safe_open(path, "pt", device=str(device)) as f:
            return tensors(f), f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise UserError(
            f"{path} is not a readable .safetensors file (truncated, empty or another format): {err}"
        ) from None


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", what: str = "checkpoint"
) -> Any:
    """A torch checkpoint, unpickled with `weights_only=True`. A file that holds other Python objects is
    refused (naming the first one), never loaded; an unreadable one is an error naming it."""
    path = _existing(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise UserError(
                f"{path} holds a Python object ({found.group(1)}) besides tensors and plain data; mmdit "
                "does not unpickle such objects, as they can run code. Checkpoints of `mmdit fit` load as "
                "they are; share weights as .safetensors (`mmdit export`)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        raise UserError(
            f"cannot read checkpoint {path}: not a torch checkpoint "
            f"({reason.group(1).strip() if reason else 'unreadable pickle'})"
        ) from None
    except Exception as err:  # torch reports broken files as RuntimeError, EOFError, OSError, ...
        raise UserError(
            f"cannot read checkpoint {path}: truncated, empty or not a torch checkpoint "
            f"({type(err).__name__})"
        ) from None


def lightning_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint written by `mmdit fit`: a dict with `state_dict` and the module's
    `hyper_parameters` (`recipe`, `classes`)."""
    checkpoint = read_checkpoint(path, map_location)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(checkpoint.get("state_dict") if hparams else None, Mapping) or "recipe" not in hparams:
        raise UserError(
            f"{path} is not a Lightning checkpoint of `mmdit fit` (it needs state_dict and "
            "hyper_parameters.recipe); a foreign DiT / SD3 checkpoint goes through `mmdit convert`"
        )
    return checkpoint


def state_dict_mismatch(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]) -> str | None:
    """None when `given` has `expected`'s keys and shapes; else a short account of how it differs."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [
        f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{len(keys)} {kind} (e.g. {', '.join(keys[:EXAMPLES])})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if keys
    ]
    return "; ".join(parts) or None
