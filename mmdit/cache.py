"""Where mmdit keeps what it computes once (encoded meshes, encoded tokens) and how a cache is named: by a
hash of everything that changes its content, so a change of settings or data is a miss, never a stale hit."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: `$MMDIT_CACHE`, else ~/.cache/mmdit."""
    return Path(os.environ.get("MMDIT_CACHE") or Path.home() / ".cache" / "mmdit")


def cache_key(*parts: object) -> str:
    """A short hash of JSON-serialisable parts (settings, file stamps)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
