"""Recipe values against the annotations of the callables they pass to (mmdit.annotations)."""

from collections.abc import Mapping, Sequence
from typing import Literal

import pytest

from mmdit.annotations import fits, misfits


@pytest.mark.parametrize(
    ("value", "annotation", "expected"),
    [
        (3, int, True),
        (True, int, False),  # YAML's true is not a count
        (3, float, True),
        ("3", float, False),
        (None, int | None, True),
        ("bf16-mixed", Literal["bf16-mixed", "32-true"] | None, True),
        ("bf17", Literal["bf16-mixed", "32-true"] | None, False),
        ([8, 8], tuple[int, int] | list[int], True),
        ([8, 8, 8], tuple[int, int], False),
        ([8, "a"], list[int], False),
        (["a", "b"], Sequence[str] | Mapping[str, Sequence[str]], True),
        ({"train": ["a"]}, Sequence[str] | Mapping[str, Sequence[str]], True),
        ("abc", Sequence[str], False),  # a string is not a list of strings here
        (object(), object, True),  # objects are judged where they are used
    ],
)
def test_fits_plain_yaml_values(value, annotation, expected):
    assert fits(value, annotation) is expected


def test_misfits_names_each_wrong_value_with_the_expected_type():
    def function(count: int, size: tuple[int, int] | list[int], name: str = "x") -> None: ...

    assert misfits({"count": "many", "size": [1, 2], "other": 1}, function) == ["count='many' (expected int)"]
