"""Output folders named by what made them, kept to a bounded number under the data dir.

A handler writes its files (MP4s, point clouds) into `cache_entry(root, digest(inputs))`: the
same inputs give the same folder across restarts (a SHA-256 of their canonical JSON, not
Python's per-process randomised `hash()`), and each new entry removes the oldest ones beyond
`keep`, so nothing accumulates. Entries younger than `min_age_s` are never removed: Gradio copies
a handler's returned files only after the handler returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

DIGEST_CHARS = 24
_ENTRY_NAME = re.compile(rf"^[0-9a-f]{{{DIGEST_CHARS}}}$")


def digest(*parts) -> str:
    """Stable hex digest of JSON-able parts (dict keys sorted; other values by str())."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def file_digest(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_entry(root: Path | str, key: str, keep: int = 64, min_age_s: float = 600.0) -> Path:
    """The folder root/key (created, its time refreshed); then prune root to its `keep` newest entries.

    Only folders named like a digest are entries: anything else under root is left alone.
    """
    if not _ENTRY_NAME.match(key):
        raise ValueError(f"cache key must be {DIGEST_CHARS} lowercase hex characters (studio.cache.digest), got {key!r}")
    root = Path(root)
    entry = root / key
    entry.mkdir(parents=True, exist_ok=True)
    os.utime(entry)
    prune(root, keep, min_age_s)
    return entry


def prune(root: Path | str, keep: int, min_age_s: float = 600.0) -> list[Path]:
    """Remove the entries of root beyond the `keep` most recently used, unless younger than min_age_s."""
    entries = []
    for p in Path(root).iterdir():
        if _ENTRY_NAME.match(p.name) and p.is_dir():
            try:
                entries.append((p.stat().st_mtime, p))
            except FileNotFoundError:  # removed by a concurrent prune
                continue
    entries.sort(reverse=True)
    now = time.time()
    removed = []
    for mtime, p in entries[keep:]:
        if now - mtime >= min_age_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
