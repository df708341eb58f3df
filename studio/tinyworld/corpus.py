"""TinyWorld prompt corpus ("World-Sim" style) and pre-training captions.

Prompts follow World-R1's format, "Camera <move>[, then <move>]. <scene sentence>", with the
structured scene beside each one. Splits:
- train: scenes that never contain a held-out colour-shape pair or a held-out camera sequence;
- test: every prompt has a camera clause and a held-out colour-shape pair or camera sequence;
- dynamic: moving objects (spin, bounce, slide), the "fluid" split.

Run ``python -m studio.tinyworld.corpus`` to (re)write assets/prompts/ deterministically.
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from studio.camera import camera_clause
from studio.tinyworld.scene import (
    COLORS, GROUNDS, MOTIONS, SHAPES, SKIES, ObjectSpec, Scene, place_objects,
)

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "prompts"
CORPUS_SEED = 0
SPLIT_SIZES = {"train": 5000, "test": 300, "dynamic": 300}

# Colour-shape pairs and camera sequences never seen in training (the "held-out combinations").
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset({
    ("red", "cone"), ("blue", "pyramid"), ("green", "cylinder"), ("yellow", "sphere"),
    ("purple", "cube"), ("orange", "cylinder"), ("pink", "cube"), ("white", "cone"),
    ("black", "sphere"), ("brown", "pyramid"),
})
SINGLE_MOVES: tuple[str, ...] = ("push_in", "pull_out", "move_left", "move_right", "orbit_left",
                                 "orbit_right", "pan_left", "pan_right", "tilt_up", "tilt_down")
HELD_OUT_SEQUENCES: frozenset[tuple[str, ...]] = frozenset({
    ("orbit_left", "push_in"), ("pan_right", "pull_out"), ("move_left", "tilt_up"),
    ("orbit_right", "pan_left"), ("push_in", "move_right"),
})
# Each camera move and the move that undoes it (a sequence never has a move followed by its opposite).
OPPOSITE = {"push_in": "pull_out", "move_left": "move_right", "orbit_left": "orbit_right",
            "pan_left": "pan_right", "tilt_up": "tilt_down"}
OPPOSITE.update({v: k for k, v in OPPOSITE.items()})

GROUND_PHRASES = {"checker": ["checkered floor", "checkerboard floor", "chequered ground"],
                  "stripes": ["striped floor", "striped ground", "stripy floor"],
                  "tiles": ["tiled floor", "tiled ground", "floor of tiles"]}
SKY_PHRASES = {"day": ["under a clear blue sky", "in daylight", "on a sunny day"],
               "sunset": ["at sunset", "under an evening sky", "at dusk"],
               "overcast": ["under an overcast sky", "on a cloudy day", "under a grey sky"]}
MOTION_PHRASES = {"spin": ["spinning {o}", "{o} that spins", "{o} rotating in place"],
                  "bounce": ["bouncing {o}", "{o} that bounces", "{o} hopping up and down"],
                  "slide": ["{o} sliding to the {d}", "{o} that glides to the {d}", "sliding {o}"]}
SCENE_TEMPLATES = [
    "{objs} {verb} on a {ground} {sky}.",
    "On a {ground} {sky}, {objs} {verb}.",
    "A simple scene with {objs} on a {ground} {sky}.",
    "{objs} placed together on a {ground} {sky}.",
    "A {ground} with {objs} {sky}.",
]

# Camera wordings for captions: several per move, all read back by parse_camera_motion.
CAPTION_CAMERA = {
    "push_in": ["the camera pushes in", "the camera dollies in", "camera push in", "the camera moves closer"],
    "pull_out": ["the camera pulls out", "the camera dollies out", "camera pull out", "the camera moves back"],
    "move_left": ["the camera moves left", "the camera trucks left", "camera move left", "the camera slides to the left"],
    "move_right": ["the camera moves right", "the camera trucks right", "camera move right", "the camera slides to the right"],
    "orbit_left": ["the camera orbits left", "the camera circles to the left", "camera orbit left", "the camera arcs left around the scene"],
    "orbit_right": ["the camera orbits right", "the camera circles to the right", "camera orbit right", "the camera arcs right around the scene"],
    "pan_left": ["the camera pans left", "the camera pans to the left", "camera pan left", "the camera swivels left"],
    "pan_right": ["the camera pans right", "the camera pans to the right", "camera pan right", "the camera swivels right"],
    "tilt_up": ["the camera tilts up", "camera tilt up", "the camera tilts upward"],
    "tilt_down": ["the camera tilts down", "camera tilt down", "the camera tilts downward"],
    "fixed": ["the camera remains fixed", "static camera", "the camera is still", "a locked off shot"],
}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(spec: ObjectSpec | dict, rng: np.random.Generator, with_size: bool = True) -> str:
    d = spec if isinstance(spec, dict) else spec.__dict__
    size = d.get("size_name", "medium")
    words = ([size] if with_size and size != "medium" else []) + [d["color"], d["shape"]]
    core = " ".join(words)
    motion = d.get("motion")
    if motion:
        tmpl = MOTION_PHRASES[motion][int(rng.integers(len(MOTION_PHRASES[motion])))]
        direction = "left" if (d.get("slide_dir") or 1.0) < 0 else "right"
        if tmpl.startswith("{o}"):
            return _article(core) + tmpl[3:].format(d=direction)
        return _article(tmpl.format(o=core, d=direction))
    return _article(core)


def scene_sentence(scene: Scene | dict, rng: np.random.Generator) -> str:
    d = scene if isinstance(scene, dict) else scene.to_dict()
    objs = [object_phrase(o, rng) for o in d["objects"]]
    objs_text = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
    verb = ["sits", "rests", "stands"][int(rng.integers(3))] if len(objs) == 1 else ["sit", "rest", "stand"][int(rng.integers(3))]
    tmpl = SCENE_TEMPLATES[int(rng.integers(len(SCENE_TEMPLATES)))]
    text = tmpl.format(
        objs=objs_text, verb=verb, ground=GROUND_PHRASES[d["ground"]][int(rng.integers(3))],
        sky=SKY_PHRASES[d["sky"]][int(rng.integers(3))])
    return text[0].upper() + text[1:]


def sample_moves(rng: np.random.Generator, allow_held_out: bool = False) -> list[str]:
    """One or two camera primitives, never a move followed by its opposite."""
    while True:
        n = 1 if rng.uniform() < 0.5 else 2
        moves = [SINGLE_MOVES[int(i)] for i in rng.choice(len(SINGLE_MOVES), size=n, replace=False)]
        if n == 2 and OPPOSITE[moves[0]] == moves[1]:
            continue
        if allow_held_out or tuple(moves) not in HELD_OUT_SEQUENCES:
            return moves


def sample_scene(rng: np.random.Generator, split: str = "train", num_objects: int | None = None,
                 dynamic: bool = False) -> Scene:
    """A random scene; training scenes never contain a held-out colour-shape pair."""
    n = num_objects or int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    specs: list[ObjectSpec] = []
    while len(specs) < n:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        if split == "train" and (color, shape) in HELD_OUT_PAIRS:
            continue
        if any(s.color == color and s.shape == shape for s in specs):
            continue
        size = ["small", "medium", "medium", "large"][int(rng.integers(4))]
        specs.append(ObjectSpec(shape, color, size))
    if dynamic:
        for s in specs[: int(rng.integers(1, len(specs) + 1))]:
            s.motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
            s.slide_dir = float(rng.choice([-1.0, 1.0]))
    return Scene(objects=place_objects(specs, rng), ground=GROUNDS[int(rng.integers(len(GROUNDS)))],
                 sky=SKIES[int(rng.integers(len(SKIES)))], palette=int(rng.integers(4)))


def make_prompt(scene: Scene, rng: np.random.Generator) -> str:
    """World-R1 format: the camera clause first, then the scene sentence."""
    clause = camera_clause(scene.moves)
    sentence = scene_sentence(scene, rng)
    return f"{clause} {sentence}".strip()


def make_caption(scene: Scene | dict, rng: np.random.Generator, camera_prob: float = 0.4) -> str:
    """A pre-training caption: the scene in varied words, a camera clause only sometimes.

    Real caption data rarely states the camera move; mimicking that leaves the base model weak at
    following camera instructions, which is what World-R1's trajectory reward fixes.
    """
    d = scene if isinstance(scene, dict) else scene.to_dict()
    sentence = scene_sentence(d, rng)
    moves = d.get("moves") or []
    if not moves or rng.uniform() >= camera_prob:
        return sentence
    parts = [CAPTION_CAMERA[m][int(rng.integers(len(CAPTION_CAMERA[m])))] for m in moves]
    cam = parts[0] if len(parts) == 1 else parts[0] + ", then " + parts[1].replace("the camera ", "")
    cam = cam[0].upper() + cam[1:] + "."
    return f"{cam} {sentence}" if rng.uniform() < 0.5 else f"{sentence} {cam}"


def build_split(split: str, n: int, seed: int = CORPUS_SEED) -> list[dict]:
    rng = np.random.default_rng([seed, ["train", "test", "dynamic"].index(split)])
    rows, seen = [], set()
    while len(rows) < n:
        if split == "test":
            # Held-out pair, held-out camera sequence, or both.
            kind = rng.integers(3)
            scene = sample_scene(rng, "test")
            if kind != 1 and not any((o.color, o.shape) in HELD_OUT_PAIRS for o in scene.objects):
                color, shape = sorted(HELD_OUT_PAIRS)[int(rng.integers(len(HELD_OUT_PAIRS)))]
                scene.objects[0].color, scene.objects[0].shape = color, shape
            scene.moves = (list(sorted(HELD_OUT_SEQUENCES)[int(rng.integers(len(HELD_OUT_SEQUENCES)))])
                           if kind != 0 else sample_moves(rng))
        elif split == "dynamic":
            scene = sample_scene(rng, "train", dynamic=True)
            scene.moves = sample_moves(rng) if rng.uniform() < 0.8 else []
        else:
            scene = sample_scene(rng, "train")
            scene.moves = sample_moves(rng) if rng.uniform() < 0.9 else ["fixed"]
        prompt = make_prompt(scene, rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"id": f"{split}-{len(rows):05d}", "prompt": prompt, "split": split,
                     "category": "dynamic" if split == "dynamic" else ("static" if scene.moves in ([], ["fixed"]) else "camera"),
                     "seed": int(rng.integers(2**31 - 1)), "scene": scene.to_dict()})
    return rows


def write_corpus(out_dir: Path = ASSETS, seed: int = CORPUS_SEED) -> dict[str, Path]:
    """Write train/test/dynamic JSONL atomically; deterministic for a seed."""
    from studio.prompts import write_open_world_corpus
    from studio.util import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in SPLIT_SIZES.items():
        rows = build_split(split, n, seed)
        path = out_dir / f"{split}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        paths[split] = path
    paths["open_world"] = write_open_world_corpus(out_dir / "open_world.jsonl", seed=seed)
    return paths


@lru_cache(maxsize=8)
def _load(split: str, directory: str) -> tuple[dict, ...]:
    path = Path(directory) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python -m studio.tinyworld.corpus` to write the corpus")
    return tuple(json.loads(line) for line in path.read_text().splitlines() if line.strip())


def load_split(split: str, directory: Path | str = ASSETS) -> list[dict]:
    """Rows {"id", "prompt", "split", "category", "seed", "scene"} of a shipped split."""
    if split not in (*SPLIT_SIZES, "open_world"):
        raise ValueError(f"unknown split {split!r}; expected one of train, test, dynamic, open_world")
    return [dict(r) for r in _load(split, str(directory))]


def scene_of(row: dict) -> Scene:
    return Scene.from_dict(row["scene"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ASSETS)
    ap.add_argument("--seed", type=int, default=CORPUS_SEED)
    args = ap.parse_args(argv)
    for name, path in write_corpus(args.out, args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
