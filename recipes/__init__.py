"""The bundled recipes. This folder is installed as the package data `mmdit.recipes` (see setup.py), so a
wheel or a non-editable install carries them; `mmdit.recipe` finds them through importlib.resources."""
