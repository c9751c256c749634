"""Model sizes as a small table.

DiT's family (Peebles & Xie, Table 1): name -> (depth, width, heads); the patch size is part of the name
(DiT-XL/2) and belongs to the image stream. MMDiT presets add the split between joint and single blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DIT = {
    "S": dict(depth=12, width=384, heads=6),
    "B": dict(depth=12, width=768, heads=12),
    "L": dict(depth=24, width=1024, heads=16),
    "XL": dict(depth=28, width=1152, heads=16),
}

PRESETS: dict[str, dict] = {
    # DiT: one stream, single blocks only.
    **{
        f"DiT-{size}/{patch}": dict(
            joint_depth=0, single_depth=d["depth"], width=d["width"], heads=d["heads"], patch_size=patch
        )
        for size, d in DIT.items()
        for patch in (2, 4, 8)
    },
    # MMDiT: joint blocks first (each stream its own weights), then shared single blocks.
    "MMDiT-tiny": dict(joint_depth=2, single_depth=2, width=128, heads=4),
    "MMDiT-S": dict(joint_depth=6, single_depth=6, width=384, heads=6),
    "MMDiT-B": dict(joint_depth=6, single_depth=6, width=768, heads=12),
    "MMDiT-L": dict(joint_depth=12, single_depth=12, width=1024, heads=16),
}


def preset(name: str) -> dict:
    """The sizes of preset `name`; an unknown name lists the known ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def model_arguments(model: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's `model` section -> MMDiT keyword arguments: the preset's sizes, then the explicit keys. A
    preset's patch size is not an MMDiT argument: the run builder gives it to the data stream."""
    sizes = preset(model["preset"]) if model.get("preset") else {}
    sizes.pop("patch_size", None)
    sizes.update({k: v for k, v in model.items() if k != "preset" and v is not None})
    for key in ("width", "heads"):
        if key not in sizes:
            raise KeyError(f"model.{key} is not set (give it, or a model.preset)")
    return sizes
