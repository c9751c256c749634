"""README's Python examples run as written: the core on tokens, and the adapter of "Add a modality"."""

import re
from pathlib import Path

from modalities import registry

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(monkeypatch):
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))  # @register stays in the test
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespaces = []
    for block in blocks:
        namespaces.append({})
        exec(compile(block, str(README), "exec"), namespaces[-1])
    core = next(ns for ns in namespaces if "velocity" in ns)
    assert core["velocity"]["image"].shape == (3, 64, 4)
    assert core["model"].inputs["image"].weight.grad is not None
    curves = next(ns for ns in namespaces if "CurveAdapter" in ns)["CurveAdapter"]
    assert registry.adapter_class("curves") is curves
    # All a gridded modality still owes the contract: its files and its judge.
    assert curves.__abstractmethods__ == {"load", "save", "evaluate"}
