"""Find modality adapters by name: built-ins, adapters registered at run time, and third-party packages that
declare an entry point in the group `mmdit.modalities`."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ModalityEntry:
    """One row of `mmdit modalities`: where a name comes from and what its adapter takes."""

    name: str
    origin: str  # "built-in", "registered" (at run time) or "plugin <distribution target>"
    options: dict[str, str]  # option -> its default, as written in Python ("" when required)
    summary: str  # the first sentence of the adapter's docstring, or why it could not be loaded


def catalogue() -> list[ModalityEntry]:
    """Every available modality with its origin, options and summary; a plugin that fails to import is
    listed with its error rather than breaking the listing."""
    plugins = _entry_points()
    rows = []
    for name in available():
        if name in _registered:
            origin = "registered"
        elif name in _BUILTIN:
            origin = "built-in"
        else:
            origin = f"plugin {plugins[name].value}"
        try:
            cls = adapter_class(name)
        except Exception as err:  # a broken third-party package must not hide the others
            rows.append(ModalityEntry(name, origin, {}, f"cannot be loaded: {err}"))
            continue
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        options = {
            p.name: "" if p.default is inspect.Parameter.empty else repr(p.default) for p in parameters
        }
        paragraph = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        summary = paragraph.split(". ")[0].removesuffix(".")
        rows.append(ModalityEntry(name, origin, options, summary))
    return rows


def build_adapter(name: str, **options: Any) -> ModalityAdapter:
    """Instantiate the adapter `name`; an option it does not take is an error that lists the ones it does."""
    cls = adapter_class(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise KeyError(f"modality {name!r} has no option {', '.join(map(repr, unknown))}; valid: {accepted}")
    return cls(**options)
