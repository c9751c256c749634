"""Packages: mmdit and modalities, plus the top-level recipes/ folder installed as `mmdit.recipes`, so that
every install (editable, `pip install .`, a wheel) carries the bundled recipes. The rest is pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mmdit*", "modalities*"]), "mmdit.recipes"],
    package_dir={"mmdit.recipes": "recipes"},
    package_data={"mmdit.recipes": ["*.yaml"]},
)
