"""Small shared helpers: atomic file writes (a crash never leaves a half-written file), the tokenizer lock."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

# A fast tokenizer (tokenizers' Rust object) keeps its padding and truncation settings as state and
# resets them on every call, so two threads tokenizing at once can pad each other's batch (an
# 11-token embedding where the model expects 64). Every tokenizer call in the studio holds this lock;
# tokenizing takes microseconds, so one lock for all tokenizers costs nothing.
TOKENIZER_LOCK = threading.Lock()


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def served_folder(name: str) -> Path:
    """A folder of its own inside Gradio's upload folder (GRADIO_TEMP_DIR, else <tmp>/gradio, as
    gradio.utils.get_upload_folder computes it): Gradio serves files there without `allowed_paths`
    and hands them out under their own names. Only media a page shows goes in it."""
    root = os.environ.get("GRADIO_TEMP_DIR") or str((Path(tempfile.gettempdir()) / "gradio").resolve())
    return Path(root) / name
