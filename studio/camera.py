"""Camera language: prompt text -> ordered camera moves -> camera-to-world trajectory.

Conventions: poses are camera-to-world 4x4 matrices in OpenCV camera axes
(+x right, +y down, +z forward), relative to the first camera (frame 0 = identity).
Distances are in units of the focus distance unless ``focus`` is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

MOVES: tuple[str, ...] = (
    "push_in", "pull_out", "move_left", "move_right", "orbit_left", "orbit_right",
    "pan_left", "pan_right", "tilt_up", "tilt_down", "fixed",
)

# Human-readable phrase for each primitive, the World-R1 wording ("Camera orbit left, then push in.").
MOVE_PHRASES: dict[str, str] = {m: m.replace("_", " ") for m in MOVES}


@dataclass(frozen=True)
class CameraMagnitudes:
    """Size of one primitive, World-R1's values rescaled from a scene plane at depth 1000.

    push/pull 600, move 220, orbit radius 600 at depth 1000 -> fractions of the focus distance.
    """

    push: float = 0.6          # fraction of focus distance travelled along +z
    truck: float = 0.22        # fraction of focus distance travelled along x
    pan_deg: float = 14.0      # yaw of a pan
    tilt_deg: float = 14.0     # pitch of a tilt (World-R1 has no tilt; same size as pan)
    orbit_deg: float = 24.0    # arc of an orbit about the subject at the focus distance


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_LEFT = r"(?:to\s+(?:the|its|his|her|their)\s+)?left(?:ward|wards)?"
_RIGHT = r"(?:to\s+(?:the|its|his|her|their)\s+)?right(?:ward|wards)?"
_ADV = r"(?:\s+(?:slowly|gently|smoothly|steadily|quickly|rapidly|gradually|a\s+bit|slightly))?"
# Up to four filler words ("around the red cube") between a verb and its direction, but never
# across a clause boundary, so "orbit around, then pan left" is not read as "orbit left".
_FILL = r"(?:\s+(?!then\b|and\b|before\b|after\b|while\b|but\b)[a-z]+){0,4}?"

_PUSH_V = r"(?:push(?:es|ing|ed)?|dolly(?:ing)?|dollies|dollied|track(?:s|ing|ed)?|mov(?:e|es|ing|ed)|glid(?:e|es|ing|ed)|creep(?:s|ing)?|crept)"
_PULL_V = r"(?:pull(?:s|ing|ed)?|dolly(?:ing)?|dollies|dollied|track(?:s|ing|ed)?|mov(?:e|es|ing|ed)|back(?:s|ing|ed)?|draw(?:s|ing|n)?|drew)"
_TRUCK_V = r"(?:mov(?:e|es|ing|ed)|truck(?:s|ing|ed)?|slid(?:e|es|ing)|shift(?:s|ing|ed)?|strafe(?:s|d)?|strafing|track(?:s|ing|ed)?|drift(?:s|ing|ed)?|glid(?:e|es|ing|ed)|travel(?:s|ing|led|ling)?|step(?:s|ping|ped)?)"
_ORBIT_V = r"(?:orbit(?:s|ing|ed)?|circl(?:e|es|ing|ed)|arc(?:s|ing|ed)?|revolv(?:e|es|ing|ed)|swing(?:s|ing)?|swung|rotat(?:e|es|ing|ed)\s+around)"
_PAN_V = r"(?:pan(?:s|ning|ned)?|swivel(?:s|ing|led|ling)?|yaw(?:s|ing|ed)?)"
_TILT_V = r"(?:tilt(?:s|ing|ed)?|pitch(?:es|ing|ed)?)"

_MOVE_PATTERNS: list[tuple[str, str]] = [
    # Orbit before truck/pan so "circles around to the left" is an orbit.
    ("orbit_left", rf"\b{_ORBIT_V}{_FILL}\s+{_LEFT}\b"),
    ("orbit_right", rf"\b{_ORBIT_V}{_FILL}\s+{_RIGHT}\b"),
    ("pan_left", rf"\b{_PAN_V}{_ADV}(?:\s+(?:across|over))?\s+{_LEFT}\b"),
    ("pan_right", rf"\b{_PAN_V}{_ADV}(?:\s+(?:across|over))?\s+{_RIGHT}\b"),
    ("tilt_up", rf"\b{_TILT_V}{_ADV}\s+(?:up|upward|upwards)\b"),
    ("tilt_down", rf"\b{_TILT_V}{_ADV}\s+(?:down|downward|downwards)\b"),
    ("push_in", rf"\b{_PUSH_V}{_ADV}\s+(?:in|inward|inwards|forward|forwards|closer|toward|towards)\b"),
    ("pull_out", rf"\b{_PULL_V}{_ADV}\s+(?:out|outward|outwards|back|backward|backwards|away)\b"),
    ("push_in", r"\b(?:advanc(?:e|es|ing|ed)|approach(?:es|ing|ed)?)\b"),
    ("pull_out", r"\b(?:retreat(?:s|ing|ed)?|recede(?:s|d)?|receding)\b"),
    ("move_left", rf"\b{_TRUCK_V}{_ADV}(?:\s+(?:sideways|laterally))?\s+{_LEFT}\b"),
    ("move_right", rf"\b{_TRUCK_V}{_ADV}(?:\s+(?:sideways|laterally))?\s+{_RIGHT}\b"),
]

_FIXED_PATTERNS: list[str] = [
    r"\bcamera\s+(?:is\s+|remains\s+|stays\s+|holds\s+|keeps\s+)?(?:completely\s+|perfectly\s+|entirely\s+)?(?:static|still|fixed|stationary|locked(?:\s+off)?|motionless|steady)\b",
    r"\b(?:static|fixed|stationary|locked\s+off|still|motionless|steady)\s+(?:camera|shot|view|viewpoint)\b",
    r"\bcamera\s+(?:does\s+not|doesn\s*t|never)\s+move\b",
    r"\bno\s+camera\s+(?:motion|movement)\b",
    r"\bcamera\s+holds\s+(?:still|steady|its\s+position)\b",
]

# A sentence is about the camera when it names it, or starts with a camera verb (imperative).
_CAMERA_NOUN = re.compile(r"\b(?:camera|cam|shot|viewpoint|point\s+of\s+view|pov|lens|we)\b")
_CAMERA_VERB_ONLY = re.compile(r"\b(?:dolly|dollies|dollying|truck|trucks|trucking|orbit|orbits|orbiting)\b")
_IMPERATIVE = re.compile(
    rf"^\s*(?:(?:slowly|then|gently|smoothly|first|next|finally)\s+)*"
    rf"(?:{_PUSH_V}|{_PULL_V}|{_TRUCK_V}|{_ORBIT_V}|{_PAN_V}|{_TILT_V})\b"
)


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'")
    text = re.sub(r"[-_/]+", " ", text)
    text = re.sub(r"'", "", text)
    return text


def _camera_sentences(text: str) -> list[tuple[int, str]]:
    """Sentences (with their offsets) that talk about the camera."""
    out = []
    for m in re.finditer(r"[^.!?;\n]+", text):
        s = m.group(0)
        if _CAMERA_NOUN.search(s) or _CAMERA_VERB_ONLY.search(s) or _IMPERATIVE.search(s):
            out.append((m.start(), s))
    return out


def parse_camera_motion(text: str) -> list[str]:
    """Ordered camera primitives named in ``text``; [] when the prompt has no camera clause.

    Only sentences about the camera count, so "a fixed gaze", "a panorama" or "a pushcart"
    are not moves; "zoom" is a lens change and is ignored.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_camera_motion expects a string, got {type(text).__name__}")
    norm = _normalise(text)
    found: list[tuple[int, int, str]] = []
    for offset, sentence in _camera_sentences(norm):
        for move, pattern in _MOVE_PATTERNS:
            for m in re.finditer(pattern, sentence):
                found.append((offset + m.start(), offset + m.end(), move))
        for pattern in _FIXED_PATTERNS:
            for m in re.finditer(pattern, sentence):
                found.append((offset + m.start(), offset + m.end(), "fixed"))
    # Keep the earliest, then longest, non-overlapping matches in reading order.
    found.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    moves: list[str] = []
    end = -1
    for start, stop, move in found:
        if start < end:
            continue
        moves.append(move)
        end = stop
    if len(moves) > 1 and "fixed" in moves:
        moves = [m for m in moves if m != "fixed"]
    # "pan left, then pan left" stays two segments on purpose; only exact duplicates from
    # overlapping wordings were removed above.
    return moves


def camera_clause(moves: list[str]) -> str:
    """The World-R1 wording for a move list: ['orbit_left', 'push_in'] -> 'Camera orbit left, then push in.'"""
    if not moves:
        return ""
    for m in moves:
        if m not in MOVES:
            raise ValueError(f"unknown camera move {m!r}; expected one of {', '.join(MOVES)}")
    if moves == ["fixed"]:
        return "Camera remains fixed."
    return "Camera " + ", then ".join(MOVE_PHRASES[m] for m in moves) + "."


# ---------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------

def _rot_y(beta: float) -> np.ndarray:
    """Rotation about camera +y (down); beta > 0 turns the view toward +x (right)."""
    c, s = np.cos(beta), np.sin(beta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(gamma: float) -> np.ndarray:
    """Rotation about camera +x; gamma > 0 turns the view toward -y (up)."""
    c, s = np.cos(gamma), np.sin(gamma)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _segment_pose(move: str, p: float, focus: float, mag: CameraMagnitudes) -> np.ndarray:
    """Relative c2w after progress p in [0, 1] of one primitive, in the segment's start camera frame."""
    T = np.eye(4)
    if move == "fixed":
        return T
    if move in ("push_in", "pull_out"):
        T[2, 3] = (1 if move == "push_in" else -1) * p * mag.push * focus
    elif move in ("move_left", "move_right"):
        T[0, 3] = (-1 if move == "move_left" else 1) * p * mag.truck * focus
    elif move in ("pan_left", "pan_right"):
        T[:3, :3] = _rot_y((-1 if move == "pan_left" else 1) * np.deg2rad(p * mag.pan_deg))
    elif move in ("tilt_up", "tilt_down"):
        T[:3, :3] = _rot_x((1 if move == "tilt_up" else -1) * np.deg2rad(p * mag.tilt_deg))
    elif move in ("orbit_left", "orbit_right"):
        # Travel on a circle of radius `focus` about the pivot (0, 0, focus), facing the pivot.
        phi = (1 if move == "orbit_left" else -1) * np.deg2rad(p * mag.orbit_deg)
        T[:3, :3] = _rot_y(phi)
        T[0, 3] = -focus * np.sin(phi)
        T[2, 3] = focus * (1 - np.cos(phi))
    else:
        raise ValueError(f"unknown camera move {move!r}; expected one of {', '.join(MOVES)}")
    return T


def camera_trajectory(
    moves: list[str],
    num_frames: int = 17,
    focus: float = 1.0,
    magnitudes: CameraMagnitudes | None = None,
) -> np.ndarray:
    """Camera-to-world poses (F, 4, 4) relative to the first camera.

    Each primitive gets an equal share of the frames at constant speed; segments are chained,
    each expressed in the camera frame where the previous one ended. Push/pull change the
    distance to the subject, so a later orbit pivots about the subject, not a fixed point.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if focus <= 0:
        raise ValueError(f"focus must be > 0, got {focus}")
    mag = magnitudes or CameraMagnitudes()
    moves = list(moves) or ["fixed"]
    for m in moves:
        if m not in MOVES:
            raise ValueError(f"unknown camera move {m!r}; expected one of {', '.join(MOVES)}")
    n = len(moves)
    # Start pose and focus distance of every segment.
    starts, focuses = [np.eye(4)], [focus]
    for m in moves:
        starts.append(starts[-1] @ _segment_pose(m, 1.0, focuses[-1], mag))
        delta = {"push_in": -mag.push, "pull_out": mag.push}.get(m, 0.0) * focuses[-1]
        focuses.append(max(focuses[-1] + delta, 1e-3 * focus))
    poses = np.empty((num_frames, 4, 4))
    for f in range(num_frames):
        u = f / (num_frames - 1) if num_frames > 1 else 0.0
        k = min(int(np.floor(u * n)), n - 1)
        p = u * n - k
        poses[f] = starts[k] @ _segment_pose(moves[k], p, focuses[k], mag)
    return poses
