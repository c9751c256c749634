"""A folder of a user's files, with one class per first-level sub-folder: the layout every folder dataset
(images, meshes, ...) reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def class_folder_files(
    root: Path, suffixes: Sequence[str], kind: str
) -> tuple[list[Path], list[int], list[str]]:
    """Files under `root` (recursively) whose suffix is in `suffixes`, sorted by relative path so that a
    fixed-seed split does not depend on the file system's listing order.

    Returns (files, labels, class names): with every file inside a first-level sub-folder, that folder's
    name is its class; with every file directly in `root` there are no classes and every label is -1.
    `kind` ("image", "mesh") names the files in errors: a missing folder, no such files, or a mix of
    files in sub-folders and directly in `root`."""
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} does not exist")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise FileNotFoundError(f"no {kind} files ({', '.join(suffixes)}) under {root}")
    folders = [p.relative_to(root).parts[0] if p.parent != root else None for p in files]
    if None in folders and any(folders):
        stray = files[folders.index(None)]
        raise ValueError(
            f"{root} mixes {kind}s in class sub-folders with {kind}s directly in it (e.g. {stray}); "
            f"put every {kind} in a class sub-folder, or none"
        )
    names = sorted({f for f in folders if f is not None})
    return files, [names.index(f) if names else -1 for f in folders], names
