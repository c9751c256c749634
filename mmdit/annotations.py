"""Whether a value read from a recipe fits a Python type annotation: recipe sections that pass straight to a
callable (`trainer` to lightning.Trainer, a stream's `options` to its adapter) are checked against that
callable's own annotations, so a wrong type is an error naming the key, not a TypeError deep inside."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def fits(value: Any, annotation: Any) -> bool:
    """True when `value` (plain YAML data: numbers, strings, lists, dicts, None) can be what `annotation`
    asks for; True too for annotations plain data cannot be judged against (objects, callables)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    kind = origin or annotation
    if isinstance(kind, type) and issubclass(kind, Mapping):
        return isinstance(value, Mapping)
    if isinstance(kind, type) and issubclass(kind, Sequence) and kind is not str:
        if not isinstance(value, list | tuple):
            return False
        if kind is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args, strict=True))
        return not args or all(fits(v, args[0]) for v in value)
    return True  # an object type (a Strategy, a Logger): plain data is judged where it is used


def misfits(values: Mapping[str, Any], function: Callable) -> list[str]:
    """`key=value (expected TYPE)` for each of `values` whose type does not fit `function`'s annotation of
    that parameter; keys `function` does not take are left to the caller."""
    try:
        hints = typing.get_type_hints(function)
    except (NameError, TypeError):  # annotations that do not resolve cannot be checked
        return []
    return [
        f"{key}={value!r} (expected {_spelling(hints[key])})"
        for key, value in values.items()
        if key in hints and not fits(value, hints[key])
    ]


def _spelling(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
