"""Prompts for real models: an open-world corpus written from templates, and prompt-file loaders.

Loaders accept a user's text file (one prompt per line), JSONL/JSON (a "prompt", "text" or
"caption" field, or plain strings) and CSV (a "prompt" column), which covers the World-R1
prompt dataset when its files are present locally.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from studio.camera import camera_clause, parse_camera_motion

MAX_PROMPT_FILE_BYTES = 50 * 1024 * 1024
_TEXT_KEYS = ("prompt", "text", "caption", "Prompt", "prompt_en")

_SUBJECTS = [
    "a stone lighthouse on a rocky cliff above the sea", "a wooden cabin in a snowy pine forest",
    "a red vintage car parked on a cobblestone street", "an ancient temple ruin overgrown with vines",
    "a sailboat moored at a quiet harbour", "a glass greenhouse full of tropical plants",
    "a narrow alley with hanging lanterns", "a stone bridge over a calm river",
    "a desert canyon with layered red rock walls", "a cosy library with tall wooden shelves",
    "a windmill on a green hill", "a marble statue in a formal garden",
    "a mountain village with white houses", "an abandoned factory hall with broken windows",
    "a market square with colourful umbrellas", "a snow-covered castle on a ridge",
    "a kitchen with copper pots on the wall", "a subway platform with tiled walls",
    "a bamboo grove with a gravel path", "a lakeside pier at the edge of a forest",
]
_DETAILS = [
    "Soft morning light falls across the scene", "Long shadows stretch over the ground at golden hour",
    "Mist drifts low over the ground", "The air is clear and the colours are vivid",
    "Overcast light keeps the shadows soft", "Warm lamps glow against the blue evening",
    "Fine textures are visible on every surface", "The scene is calm and nothing moves",
]
_DYNAMIC = [
    "waves crash against the rocks", "a flock of birds takes off", "a crowd walks across the square",
    "a dog runs through the grass", "flags flap in a strong wind", "a waterfall pours into a pool",
    "leaves swirl in the wind", "a train rushes past", "candles flicker on the table",
    "a horse gallops along the shore",
]
_MOVES = ("push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right",
          "pan_left", "pan_right", "tilt_up", "tilt_down")


def open_world_prompts(n: int = 400, seed: int = 0) -> list[dict]:
    """Open-world scenes with World-R1 camera clauses, for Wan-scale models; deterministic."""
    rng = np.random.default_rng([seed, 7])
    rows, seen = [], set()
    while len(rows) < n:
        k = 1 if rng.uniform() < 0.5 else 2
        moves = [_MOVES[int(i)] for i in rng.choice(len(_MOVES), size=k, replace=False)]
        subject = _SUBJECTS[int(rng.integers(len(_SUBJECTS)))]
        dynamic = rng.uniform() < 0.25
        detail = (f"In the scene, {_DYNAMIC[int(rng.integers(len(_DYNAMIC)))]}" if dynamic
                  else _DETAILS[int(rng.integers(len(_DETAILS)))])
        prompt = f"{camera_clause(moves)} A cinematic view of {subject}. {detail}."
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"id": f"open-{len(rows):05d}", "prompt": prompt, "moves": moves,
                     "category": "dynamic" if dynamic else "camera"})
    return rows


def write_open_world_corpus(path: Path, n: int = 400, seed: int = 0) -> Path:
    from studio.util import atomic_write_text

    rows = open_world_prompts(n, seed)
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _from_obj(obj) -> str | None:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        for k in _TEXT_KEYS:
            if isinstance(obj.get(k), str):
                return obj[k]
    return None


def load_prompt_file(path: Path | str, max_prompts: int = 100_000) -> list[str]:
    """Prompts from .txt (one per line), .jsonl, .json or .csv; blank lines and '#' comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise ValueError(f"prompt file {path} is larger than {MAX_PROMPT_FILE_BYTES // 2**20} MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file {path} is not UTF-8 text: {e}") from None
    suffix = path.suffix.lower()
    prompts: list[str] = []
    if suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                p = _from_obj(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if p is None:
                raise ValueError(f"{path}:{i}: expected a string or an object with one of {_TEXT_KEYS}")
            prompts.append(p)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
        items = data if isinstance(data, list) else data.get("prompts", data.get("data")) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a list of prompts or {{'prompts': [...]}}")
        prompts = [p for p in (_from_obj(x) for x in items) if p is not None]
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        key = next((k for k in _TEXT_KEYS if reader.fieldnames and k in reader.fieldnames), None)
        if key is None:
            raise ValueError(f"{path}: CSV needs a column named one of {_TEXT_KEYS}")
        prompts = [row[key] for row in reader]
    else:
        prompts = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts found")
    return prompts[:max_prompts]


def describe_prompts(prompts: list[str]) -> dict:
    """How many prompts carry a camera clause, and which moves they ask for."""
    moves = [parse_camera_motion(p) for p in prompts]
    counts: dict[str, int] = {}
    for ms in moves:
        for m in ms:
            counts[m] = counts.get(m, 0) + 1
    return {"prompts": len(prompts), "with_camera": sum(bool(m) for m in moves), "moves": counts}
