"""TinyWorld scene specification and the prompt language that describes it.

A scene is one to three primitive objects on a textured ground under a sky, plus the camera
moves of the clip. Prompts name objects as "[motion] [size] <colour> <shape>" and the ground
by its pattern; anything else is ignored with a warning.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from studio.camera import MOVES, parse_camera_motion

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "pyramid")
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "orange": (0.96, 0.50, 0.08),
    "yellow": (0.95, 0.86, 0.12),
    "green": (0.16, 0.68, 0.20),
    "blue": (0.12, 0.30, 0.92),
    "purple": (0.55, 0.20, 0.78),
    "pink": (0.98, 0.52, 0.72),
    "white": (0.94, 0.94, 0.94),
    "black": (0.07, 0.07, 0.08),
    "brown": (0.50, 0.30, 0.13),
}
GROUNDS: tuple[str, ...] = ("checker", "stripes", "tiles")
SKIES: tuple[str, ...] = ("day", "sunset", "overcast")
MOTIONS: tuple[str, ...] = ("spin", "bounce", "slide")
SIZES: dict[str, float] = {"small": 0.42, "medium": 0.55, "large": 0.7}
# Two-tone neutral palettes for the ground, chosen by seed (never an object colour).
GROUND_PALETTES: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.80, 0.80, 0.78), (0.30, 0.30, 0.32)),
    ((0.86, 0.78, 0.62), (0.45, 0.38, 0.28)),
    ((0.62, 0.72, 0.74), (0.22, 0.30, 0.34)),
    ((0.70, 0.76, 0.58), (0.30, 0.36, 0.22)),
)

SHAPE_WORDS: dict[str, str] = {
    "cube": "cube", "cubes": "cube", "box": "cube", "boxes": "cube", "block": "cube", "blocks": "cube",
    "sphere": "sphere", "spheres": "sphere", "ball": "sphere", "balls": "sphere", "orb": "sphere",
    "cylinder": "cylinder", "cylinders": "cylinder", "pillar": "cylinder", "pillars": "cylinder",
    "cone": "cone", "cones": "cone",
    "pyramid": "pyramid", "pyramids": "pyramid",
}
GROUND_WORDS: dict[str, str] = {
    "checker": "checker", "checkered": "checker", "checkerboard": "checker", "chequered": "checker",
    "stripes": "stripes", "striped": "stripes", "stripy": "stripes",
    "tiles": "tiles", "tiled": "tiles", "tile": "tiles",
}
SKY_WORDS: dict[str, str] = {
    "day": "day", "daylight": "day", "sunny": "day", "clear": "day", "blue": "day",
    "sunset": "sunset", "dusk": "sunset", "evening": "sunset",
    "overcast": "overcast", "cloudy": "overcast", "grey": "overcast", "gray": "overcast",
}
MOTION_WORDS: dict[str, str] = {
    "spin": "spin", "spins": "spin", "spinning": "spin", "rotates": "spin", "rotating": "spin", "turning": "spin",
    "bounce": "bounce", "bounces": "bounce", "bouncing": "bounce", "hops": "bounce", "hopping": "bounce",
    "slide": "slide", "slides": "slide", "sliding": "slide", "glides": "slide", "gliding": "slide",
}
SIZE_WORDS: dict[str, str] = {"small": "small", "little": "small", "tiny": "small",
                              "large": "large", "big": "large", "huge": "large", "medium": "medium"}
COUNT_WORDS: dict[str, int] = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}

# Words that carry no scene content but are part of the prompt language (templates, camera
# clauses, connectives). Anything outside these and the vocabularies above is reported.
FUNCTION_WORDS: frozenset[str] = frozenset("""
a an the and then with on in of to at by under over across beside next near while as its it is are
its their there this that these those from into toward towards around behind front left right up down
camera shot view scene clip video frame we slowly gently smoothly steadily quickly gradually slightly
sits sit stands stand rests rest lies lie placed placing standing sitting resting lying lay set
floor ground plane surface field board sky light lit backdrop background under beneath
push pushes pushing pushed pull pulls pulling pulled dolly dollies move moves moving moved truck trucks
trucking orbit orbits orbiting circle circles circling arc arcs pan pans panning tilt tilts tilting
fixed static still stationary remains stays holds locked steady motionless does not no motion movement
in out forward back backward away closer sideways laterally track tracks tracking glide
object objects shape shapes toy toys together pair group cluster arrangement side each other
also both some several simple bright colored coloured rendered render world tiny tinyworld
pattern patterned sun weather mid afternoon morning place hopping
""".split())


@dataclass
class SceneObject:
    """One primitive: base centre (x, z) on the ground plane, half-width `size`, yaw in radians."""

    shape: str
    color: str
    size: float = SIZES["medium"]
    x: float = 0.0
    z: float = 0.0
    yaw: float = 0.0
    motion: str | None = None
    slide_dir: float = 1.0  # +1 slides toward the first camera's right, -1 toward its left
    size_name: str = "medium"


@dataclass
class Scene:
    objects: list[SceneObject]
    ground: str = "checker"
    sky: str = "day"
    palette: int = 0
    moves: list[str] = field(default_factory=list)

    @property
    def is_dynamic(self) -> bool:
        return any(o.motion for o in self.objects)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = [SceneObject(**o) for o in d["objects"]]
        return cls(objects=objs, ground=d.get("ground", "checker"), sky=d.get("sky", "day"),
                   palette=int(d.get("palette", 0)), moves=list(d.get("moves", [])))


@dataclass
class ObjectSpec:
    """What a prompt says about one object, before layout."""

    shape: str
    color: str | None = None
    size: str | None = None
    motion: str | None = None
    slide_dir: float | None = None


@dataclass
class ParsedPrompt:
    objects: list[ObjectSpec]
    ground: str | None
    sky: str | None
    moves: list[str]
    unknown_words: list[str]


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    return frozenset(set(SHAPE_WORDS) | set(GROUND_WORDS) | set(SKY_WORDS) | set(MOTION_WORDS) | set(SIZE_WORDS)
                     | set(COUNT_WORDS) | set(COLORS) | FUNCTION_WORDS)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower().replace("-", " "))


def parse_scene_prompt(prompt: str) -> ParsedPrompt:
    """Read objects, ground, sky and camera moves out of a prompt."""
    words = _words(prompt)
    used = [False] * len(words)
    objects: list[ObjectSpec] = []
    for i, w in enumerate(words):
        if w not in SHAPE_WORDS:
            continue
        used[i] = True
        spec = ObjectSpec(shape=SHAPE_WORDS[w])
        count = 1
        # Adjectives before the noun: "two small spinning red cubes".
        j = i - 1
        while j >= 0 and i - j <= 4:
            v = words[j]
            if v in COLORS and spec.color is None:
                spec.color = v
            elif v in SIZE_WORDS and spec.size is None:
                spec.size = SIZE_WORDS[v]
            elif v in MOTION_WORDS and spec.motion is None:
                spec.motion = MOTION_WORDS[v]
            elif v in COUNT_WORDS:
                count = COUNT_WORDS[v]
                used[j] = True
                break
            elif v in _vocabulary():
                break
            # unknown words ("a red dragon cube") are skipped, not a boundary
            used[j] = True
            j -= 1
            continue
            used[j] = True
            j -= 1
        # A verb after the noun: "a red cube spins", "a cone that slides to the left".
        k = i + 1
        while k < len(words) and k - i <= 3 and words[k] in {"that", "which", "is", "slowly", "gently", "quickly"}:
            k += 1
        if k < len(words) and words[k] in MOTION_WORDS and spec.motion is None:
            spec.motion = MOTION_WORDS[words[k]]
            used[k] = True
        if spec.motion == "slide":
            tail = words[k + 1:k + 5]
            if "left" in tail:
                spec.slide_dir = -1.0
            elif "right" in tail:
                spec.slide_dir = 1.0
        objects.extend(ObjectSpec(**asdict(spec)) for _ in range(count))
    ground = next((GROUND_WORDS[w] for w in words if w in GROUND_WORDS), None)
    sky = next((SKY_WORDS[w] for w in words if w in SKY_WORDS and w not in COLORS), None)
    if sky is None and "sky" in words:
        i = words.index("sky")
        if i > 0 and words[i - 1] in SKY_WORDS:
            sky = SKY_WORDS[words[i - 1]]
    unknown = sorted({w for w in words if w not in _vocabulary()})
    return ParsedPrompt(objects=objects[:3], ground=ground, sky=sky,
                        moves=parse_camera_motion(prompt), unknown_words=unknown)


def layout_scene(parsed: ParsedPrompt, seed: int = 0) -> tuple[Scene, list[str]]:
    """Turn a parsed prompt into a concrete scene; the seed fills in what the prompt leaves open."""
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    specs = list(parsed.objects)
    if parsed.unknown_words:
        notes.append("ignored unknown words: " + ", ".join(parsed.unknown_words))
    if not specs:
        specs = [ObjectSpec("cube", "red"), ObjectSpec("sphere", "blue")]
        notes.append("no known object in the prompt; rendering the default scene (a red cube and a blue sphere)")
    objects = place_objects(specs, rng)
    scene = Scene(
        objects=objects,
        ground=parsed.ground or GROUNDS[int(rng.integers(len(GROUNDS)))],
        sky=parsed.sky or SKIES[int(rng.integers(len(SKIES)))],
        palette=int(rng.integers(len(GROUND_PALETTES))),
        moves=list(parsed.moves),
    )
    return scene, notes


PLACEMENT_RADIUS = 1.15
SLIDE_DISTANCE = 1.1


def place_objects(specs: list[ObjectSpec], rng: np.random.Generator) -> list[SceneObject]:
    """Rejection-sample non-overlapping positions (sliding objects reserve their whole path)."""
    placed: list[SceneObject] = []
    for spec in specs:
        size = SIZES[spec.size or "medium"] * float(rng.uniform(0.92, 1.08))
        color = spec.color or list(COLORS)[int(rng.integers(len(COLORS)))]
        slide_dir = spec.slide_dir if spec.slide_dir is not None else float(rng.choice([-1.0, 1.0]))
        best = None
        for _ in range(200):
            r = PLACEMENT_RADIUS * np.sqrt(rng.uniform(0, 1))
            a = rng.uniform(0, 2 * np.pi)
            cand = SceneObject(spec.shape, color, size, float(r * np.cos(a)), float(r * np.sin(a)),
                               float(rng.uniform(0, 2 * np.pi)), spec.motion, slide_dir, spec.size or "medium")
            if all(_clearance(cand, o) > 0.12 for o in placed):
                best = cand
                break
        if best is None:  # crowded: fall back to a spread-out slot
            k = len(placed)
            best = SceneObject(spec.shape, color, size, -1.2 + 1.2 * k, 0.0, 0.0, spec.motion, slide_dir,
                               spec.size or "medium")
        placed.append(best)
    return placed


def _path(o: SceneObject) -> np.ndarray:
    """Sample base positions along an object's motion (static objects: one point)."""
    if o.motion != "slide":
        return np.array([[o.x, o.z]])
    # Slides follow world -x/+x, which is the first camera's right/left (camera looks along +z).
    t = np.linspace(-0.5, 0.5, 9)[:, None]
    return np.array([o.x, o.z]) + t * np.array([-o.slide_dir * SLIDE_DISTANCE, 0.0])


def _clearance(a: SceneObject, b: SceneObject) -> float:
    pa, pb = _path(a), _path(b)
    d = np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min()
    return float(d - 1.45 * (a.size + b.size))


def scene_from_prompt(prompt: str, seed: int = 0, warn: bool = True) -> tuple[Scene, list[str]]:
    """Parse and lay out a prompt; unknown words and default scenes are reported as warnings."""
    parsed = parse_scene_prompt(prompt)
    scene, notes = layout_scene(parsed, seed)
    if warn:
        for n in notes:
            warnings.warn(n, stacklevel=2)
    return scene, notes


def validate_scene(scene: Scene) -> None:
    if not 1 <= len(scene.objects) <= 3:
        raise ValueError(f"a TinyWorld scene holds 1 to 3 objects, got {len(scene.objects)}")
    for o in scene.objects:
        if o.shape not in SHAPES:
            raise ValueError(f"unknown shape {o.shape!r}; expected one of {', '.join(SHAPES)}")
        if o.color not in COLORS:
            raise ValueError(f"unknown colour {o.color!r}; expected one of {', '.join(COLORS)}")
        if o.motion not in (None, *MOTIONS):
            raise ValueError(f"unknown motion {o.motion!r}; expected one of {', '.join(MOTIONS)}")
    if scene.ground not in GROUNDS:
        raise ValueError(f"unknown ground {scene.ground!r}; expected one of {', '.join(GROUNDS)}")
    if scene.sky not in SKIES:
        raise ValueError(f"unknown sky {scene.sky!r}; expected one of {', '.join(SKIES)}")
    for m in scene.moves:
        if m not in MOVES:
            raise ValueError(f"unknown camera move {m!r}")
