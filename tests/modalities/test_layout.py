"""The layout of modalities/: a package per modality plus modalities/common, and no modality imports another.

A module under modalities/<name>/ may import its own package, modalities.common, modalities.registry, mmdit
and third-party libraries; modalities/common imports no modality. Inside modalities/, names come from the
module that defines them, not from a package's re-exports (which would invite import cycles).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODALITIES = ROOT / "modalities"
PACKAGES = sorted(p.parent.name for p in MODALITIES.glob("*/__init__.py"))
SHARED = ("modalities.common", "modalities.registry")


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in the file at `path` under `root`: `from a.b import c` gives
    a.b.c (c may be a module or a name in one), relative imports are resolved against the file's package."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def foreign_imports(path: Path, own: str, root: Path = ROOT) -> list[str]:
    """The imports in `path` (a file of package modalities.`own`) of modalities code it may not use."""
    allowed = ("modalities.common",) if own == "common" else (f"modalities.{own}", *SHARED)
    bad = []
    for line, name in imports(path, root):
        if name.split(".")[0] != "modalities":
            continue  # mmdit, the standard library, third-party libraries
        if not any(name == a or name.startswith(a + ".") for a in allowed):
            bad.append(f"{path.relative_to(root).as_posix()}:{line} imports {name}")
    return bad


def test_every_modality_is_a_package():
    assert {"common", "image", "audio", "latent", "mesh", "text", "video"} <= set(PACKAGES)
    stray = sorted(p.name for p in MODALITIES.glob("*.py") if p.name not in ("__init__.py", "registry.py"))
    assert not stray, f"modules directly in modalities/ (each belongs in a package): {stray}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_modality_imports_another(package: str):
    files = sorted((MODALITIES / package).rglob("*.py"))
    assert files
    bad = [line for path in files for line in foreign_imports(path, package)]
    assert not bad, "\n".join(bad)


def test_names_are_imported_from_the_module_that_defines_them():
    """`from modalities.image import ImageAdapter` (a package's re-export) is for users; inside modalities/
    an import names the module: `from modalities.image.adapter import ImageAdapter`."""
    bad = []
    for path in sorted(MODALITIES.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            package = ROOT.joinpath(*node.module.split("."))
            if node.module.split(".")[0] != "modalities" or not (package / "__init__.py").exists():
                continue  # not modalities code, or a module
            names = [a.name for a in node.names if not (package / f"{a.name}.py").exists()]
            names = [n for n in names if not (package / n / "__init__.py").exists()]  # not a sub-package
            if names:
                bad.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {names} from package {node.module}"
                )
    assert not bad, "\n".join(bad)


def test_a_foreign_import_is_reported(tmp_path: Path):
    audio = tmp_path / "modalities" / "audio"
    audio.mkdir(parents=True)
    (audio / "adapter.py").write_text(
        "import numpy\n"
        "from mmdit.contract import Tokens\n"
        "from modalities.audio.datasets import NotesDataset\n"
        "from modalities.common.splits import SPLITS\n"
        "from modalities.registry import register\n"
        "from . import tokenizers\n"
        "from modalities.image.adapter import ImageAdapter\n"
        "from modalities import video\n"
        "from ..mesh import sdf\n"
        "import modalities.text.adapter\n"
        "def later():\n"
        "    from ..common.grids import to_pil\n"
        "    from ..latent.adapter import read_latent\n"
    )
    assert foreign_imports(audio / "adapter.py", "audio", tmp_path) == [
        "modalities/audio/adapter.py:7 imports modalities.image.adapter.ImageAdapter",
        "modalities/audio/adapter.py:8 imports modalities.video",
        "modalities/audio/adapter.py:9 imports modalities.mesh.sdf",
        "modalities/audio/adapter.py:10 imports modalities.text.adapter",
        "modalities/audio/adapter.py:13 imports modalities.latent.adapter.read_latent",
    ]
    (tmp_path / "modalities" / "common").mkdir()
    (tmp_path / "modalities" / "common" / "grids.py").write_text("from modalities.registry import register\n")
    assert foreign_imports(tmp_path / "modalities" / "common" / "grids.py", "common", tmp_path) == [
        "modalities/common/grids.py:1 imports modalities.registry.register"
    ]
