"""A wheel built from the tree carries every bundled recipe, and each loads from the installed copy."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from omegaconf import OmegaConf

from mmdit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_the_recipes(tmp_path, teacher_export):
    # From a copy of the sources: setuptools builds in place, and a build/ folder left in the tree would carry
    # stale modules into later wheels.
    source = tmp_path / "source"
    leave_out = shutil.ignore_patterns(
        ".*", "build", "dist", "runs", "*.egg-info", "__pycache__", "lightning_logs"
    )
    shutil.copytree(ROOT, source, ignore=leave_out)
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path, source]
    subprocess.run([sys.executable, "-m", "pip", *build], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("mmdit_toolkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        tree = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
        assert tree, "recipes/ holds no recipe"
        packed = sorted(n.removeprefix("mmdit/recipes/") for n in names if n.startswith("mmdit/recipes/"))
        assert packed == sorted([*tree, "__init__.py"])
        for name in tree:  # the packed copy is the file in the tree and a valid recipe
            text = archive.read(f"mmdit/recipes/{name}").decode()
            assert text == (ROOT / "recipes" / name).read_text()
            written = OmegaConf.create(text)
            overrides = [f"distill.teacher={teacher_export}"] if "distill" in written else []
            assert load_recipe(dict(written), overrides).name == name.removesuffix(".yaml")
    sources = {str(p.relative_to(ROOT)) for d in ("mmdit", "modalities") for p in (ROOT / d).rglob("*.py")}
    assert sources <= names, f"left out of the wheel: {sorted(sources - names)}"
