"""A codec's identity for caches: the sha256 of its file, or of a diffusers folder's files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def codec_digest(path: str | Path) -> str:
    """sha256 of a codec file, or of a diffusers folder's files (relative names and contents, sorted by
    name), so that retraining or replacing the codec changes it."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            digest.update(file.read_bytes())
    return digest.hexdigest()
