"""Joined data: items of the data stream's dataset paired with items of another stream's dataset through a
fixed mapping between their labels, so one batch holds two media (a digit image and the note that digit
maps to) and one model can learn to go from either to the other.

A recipe declares it under `data.join` ({stream: {source, key, to, match}}): item i of the data stream,
whose label `key` is class c, is paired with an item of `source` (read by that stream's adapter) whose
label `to` is class match[c]. Training items pick their partner at random among the matching ones (the
draw is seeded per (seed, epoch, index) by `mmdit.training.train_order.SeededItems`); held-out items take
a fixed one, so evaluations repeat.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset


def item_labels(dataset: Dataset, i: int) -> Mapping[str, int]:
    """The labels of item i: the dataset's `item_labels(i)` where it has one (no media read: a folder of
    files indexes its partners without loading them), else those of the item itself."""
    labels_only = getattr(dataset, "item_labels", None)
    return labels_only(i) if labels_only is not None else dataset[i]["labels"]


class JoinedDataset(Dataset):
    """Items {"media": {base_stream: ..., other_stream: ...} (base's own streams when its media are
    already keyed by stream, as after an earlier join), "labels": both items' labels, "numbers": both
    items' numbers}; `classes` is both datasets' classes (their label names must differ).

    match: {class name of base's `key`: class name of other's `to`}; every class of `key` needs one, and
    every target needs at least one item in `other`."""

    def __init__(
        self,
        base: Dataset,
        base_stream: str,
        other: Dataset,
        other_stream: str,
        *,
        key: str,
        to: str,
        match: Mapping[str, str],
        split: str,
    ) -> None:
        base_classes, other_classes = dict(base.classes), dict(other.classes)
        shared = sorted(set(base_classes) & set(other_classes))
        if shared:
            raise ValueError(
                f"data.join.{other_stream}: both datasets have the labels {shared}; joined items need "
                "distinct label names"
            )
        if key not in base_classes:
            raise KeyError(f"data.join.{other_stream}.key {key!r} is not a label of {base_stream!r}'s data; "
                           f"it has {sorted(base_classes)}")  # fmt: skip
        if to not in other_classes:
            raise KeyError(f"data.join.{other_stream}.to {to!r} is not a label of {other_stream!r}'s data; "
                           f"it has {sorted(other_classes)}")  # fmt: skip
        unmatched = [c for c in base_classes[key] if c not in match]
        if unmatched:
            raise KeyError(f"data.join.{other_stream}.match has no entry for the {key} classes {unmatched}")
        unknown = sorted({t for t in match.values() if t not in other_classes[to]})
        if unknown:
            raise KeyError(
                f"data.join.{other_stream}.match maps to {unknown}, which are not {to} classes of "
                f"{other_stream!r}'s data: {other_classes[to]}"
            )
        by_class: dict[int, list[int]] = {}
        for j in range(len(other)):
            by_class.setdefault(int(item_labels(other, j)[to]), []).append(j)
        self.partners: list[list[int]] = []
        for name in base_classes[key]:
            target = other_classes[to].index(match[name])
            if target not in by_class:
                raise ValueError(
                    f"data.join.{other_stream}: the {split} split has no item of {to} {match[name]!r}, the "
                    f"partner of {key} {name!r}"
                )
            self.partners.append(by_class[target])
        self.base, self.other, self.key, self.split = base, other, key, split
        self.base_stream, self.other_stream = base_stream, other_stream
        self.classes = {**base_classes, **other_classes}

    def __len__(self) -> int:
        return len(self.base)

    def partner(self, i: int, item: Mapping[str, Any]) -> int:
        """The index into `other` of item i's partner: a random match in training, match i mod count
        held out."""
        candidates = self.partners[int(item["labels"][self.key])]
        return random.choice(candidates) if self.split == "train" else candidates[i % len(candidates)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        other = self.other[self.partner(i, item)]
        media = item["media"] if isinstance(item["media"], Mapping) else {self.base_stream: item["media"]}
        return {
            "media": {**media, self.other_stream: other["media"]},
            "labels": {**item["labels"], **other["labels"]},
            "numbers": {**item.get("numbers", {}), **other.get("numbers", {})},
        }


def matched_classes(spec: Mapping[str, Any]) -> dict[str, str]:
    """A `data.join` entry's `match` as {class name: class name} (YAML may give numbers for names)."""
    return {str(k): str(v) for k, v in spec["match"].items()}
