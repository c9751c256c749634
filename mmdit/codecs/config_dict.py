"""A codec config dataclass as the JSON an export stores, and back: what every codec kind's config shares."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass -> a JSON-able dict of its fields (tuples as lists)."""
    return {
        f.name: list(value) if isinstance(value := getattr(config, f.name), tuple) else value
        for f in dataclasses.fields(config)
    }


def config_from_dict(cls: type[Config], d: dict[str, Any], what: str) -> Config:
    """The inverse of `config_to_dict`: keys with defaults may be left out; an unknown or a missing required
    key is an error naming it (`what`: the config's name in the message, e.g. "autoencoder")."""
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown}; valid: {sorted(names)}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in d]
    if missing:
        raise ValueError(f"missing {what} config keys {missing}")
    return cls(**d)
