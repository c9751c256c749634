"""Find modality adapters by name: built-ins, adapters registered at run time, and third-party packages that
declare an entry point in the group `mmdit.modalities`."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from typing import Any

from mmdit.contract import ModalityAdapter

ENTRY_POINT_GROUP = "mmdit.modalities"
_BUILTIN = {
    "image": "modalities.image.adapter:ImageAdapter",
    "audio": "modalities.audio.adapter:AudioAdapter",
    "latent": "modalities.latent.adapter:LatentAdapter",
    "mesh": "modalities.mesh.adapter:MeshAdapter",
    "text": "modalities.text.adapter:TextAdapter",
    "video": "modalities.video.adapter:VideoAdapter",
}
_registered: dict[str, type[ModalityAdapter]] = {}


def register(cls: type[ModalityAdapter]) -> type[ModalityAdapter]:
    """Class decorator: make `cls` available under `cls.name` (overrides a built-in of the same name)."""
    _registered[cls.name] = cls
    return cls


def _import(target: str) -> type[ModalityAdapter]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every modality name a recipe may use."""
    return sorted({*_BUILTIN, *_registered, *_entry_points()})


def adapter_class(name: str) -> type[ModalityAdapter]:
    if name in _registered:
        return _registered[name]
    if name in _BUILTIN:
        return _import(_BUILTIN[name])
    plugins = _entry_points()
    if name in plugins:
        return plugins[name].load()
    raise KeyError(f"unknown modality {name!r}; available: {', '.join(available())}")


def build_adapter(name: str, **options: Any) -> ModalityAdapter:
    """Instantiate the adapter `name`; an option it does not take is an error that lists the ones it does."""
    cls = adapter_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise KeyError(f"modality {name!r} has no option {', '.join(map(repr, unknown))}; valid: {accepted}")
    return cls(**options)
