"""A user's folder of media files, labelled by first-level sub-folder: shared by every folder dataset."""

from __future__ import annotations

from pathlib import Path


def labelled_files(
    root: Path, suffixes: tuple[str, ...], kind: str
) -> tuple[list[Path], list[int | None], dict]:
    """Files under `root` (recursively) whose suffix is one of `suffixes`, sorted by relative path (so a
    fixed-seed split does not depend on the file system's listing order).

    Returns (files, label per file, classes): with every file inside a first-level sub-folder, the
    sub-folder's name is the class (`classes = {"class": sorted names}`, labels index it); with every file
    directly in `root` there are no labels (None each, classes {}). A mix of both is an error."""
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
            f"{root} mixes {kind} files in class sub-folders with files directly in it (e.g. {stray}); "
            "put every file in a class sub-folder, or none"
        )
    names = sorted({f for f in folders if f is not None})
    labels = [names.index(f) if names else None for f in folders]
    return files, labels, ({"class": names} if names else {})
