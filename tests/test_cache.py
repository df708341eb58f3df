"""studio.cache: output folders named by a stable digest, bounded in number."""

import os
import subprocess
import sys
import time
from pathlib import Path

from studio.cache import cache_entry, digest, prune
from studio.app.compare import compare_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_digest_is_the_same_in_another_process():
    inputs = ("Camera pan left. A red cube.", 0, 20, 5.0, 17, 64, True, "tinyworld", None)
    code = f"from studio.cache import digest; print(digest(*{inputs!r}))"
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "random"}).stdout.strip()
    assert other == digest(*inputs) and len(other) == 24
    assert digest(*inputs) != digest("Camera pan left. A red cube.", 1, 20, 5.0, 17, 64, True, "tinyworld", None)


def test_compare_folders_are_stable_across_restarts(tmp_path):
    args = ("A red cube.", 0, 20, 5.0, 17, 64, True, "tinyworld", None)
    assert compare_dir(tmp_path, *args) == compare_dir(tmp_path, *args) == tmp_path / "compare" / digest("compare", *args)


def test_entries_beyond_keep_are_removed_oldest_first_and_nothing_else(tmp_path):
    (tmp_path / "uploads").mkdir()  # not an entry: never touched
    made = []
    for i in range(5):
        made.append(cache_entry(tmp_path, digest(i), keep=3, min_age_s=0))
        os.utime(made[-1], (time.time() - 100 + i, time.time() - 100 + i))
    prune(tmp_path, keep=3, min_age_s=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([m.name for m in made[2:]] + ["uploads"])
    # young entries stay even beyond keep: Gradio copies a handler's files after it returns
    prune(tmp_path, keep=1, min_age_s=3600)
    assert len([p for p in tmp_path.iterdir() if p.name != "uploads"]) == 3
