"""Vectorised numpy ray caster for TinyWorld with exact depth, poses and instance ids.

All frames are traced at once: rays have shape (F, P, 3) and every per-frame quantity
(camera pose, object pose) broadcasts as (F, 1, ...). Ray directions have unit z in camera
coordinates, so the ray parameter of a hit *is* its z-depth.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from studio.camera import camera_trajectory
from studio.tinyworld.scene import (
    COLORS, GROUND_PALETTES, SLIDE_DISTANCE, Scene, scene_from_prompt, validate_scene,
)

HFOV_DEG = 60.0
LOOK_AT = np.array([0.0, 0.35, 0.0])
CAMERA_DISTANCE = 4.5           # the focus distance of every TinyWorld clip
CAMERA_ELEVATION_DEG = 22.0
GROUND_RADIUS = 40.0
NEAR = 0.05
LIGHT_DIR = np.array([-0.45, 0.8, -0.4]) / np.linalg.norm([-0.45, 0.8, -0.4])
AMBIENT = 0.38

_F32 = np.float32
_SKY_COLORS = {  # (horizon, zenith)
    "day": ((0.78, 0.86, 0.95), (0.32, 0.52, 0.86)),
    "sunset": ((0.98, 0.72, 0.45), (0.42, 0.30, 0.55)),
    "overcast": ((0.80, 0.80, 0.82), (0.55, 0.57, 0.62)),
}


@dataclass
class RenderedClip:
    """A rendered clip with its ground truth. Shapes follow docs/architecture.md."""

    frames: np.ndarray      # (F, H, W, 3) uint8
    depth: np.ndarray       # (F, H, W) float32, 0 where the ray hits the sky
    K: np.ndarray           # (3, 3)
    c2w: np.ndarray         # (F, 4, 4) world poses, OpenCV camera axes
    instance: np.ndarray    # (F, H, W) int8: -1 sky, 0 ground, i >= 1 object i-1
    scene: Scene
    prompt: str = ""
    focus: float = CAMERA_DISTANCE
    warnings: list[str] = field(default_factory=list)

    @property
    def moves(self) -> list[str]:
        return self.scene.moves

    @property
    def c2w_relative(self) -> np.ndarray:
        """Poses relative to the first camera (what camera_trajectory returns)."""
        return np.linalg.inv(self.c2w[0])[None] @ self.c2w


def intrinsics(height: int, width: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    """Pinhole K with square pixels; the horizontal field of view is fixed."""
    fx = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]])


def initial_pose() -> np.ndarray:
    """First camera: CAMERA_DISTANCE from the look-at point, raised by CAMERA_ELEVATION_DEG."""
    el = np.deg2rad(CAMERA_ELEVATION_DEG)
    pos = LOOK_AT + CAMERA_DISTANCE * np.array([0.0, np.sin(el), -np.cos(el)])
    z = LOOK_AT - pos
    z /= np.linalg.norm(z)
    down = np.array([0.0, -1.0, 0.0])
    y = down - (down @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, pos
    return c2w


def object_poses(scene: Scene, num_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per object: base positions (F, 3) and yaw (F,) over the clip."""
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    out = []
    for o in scene.objects:
        pos = np.tile([o.x, 0.0, o.z], (num_frames, 1)).astype(np.float64)
        yaw = np.full(num_frames, o.yaw)
        if o.motion == "spin":
            yaw = yaw + np.pi * t
        elif o.motion == "bounce":
            pos[:, 1] = 1.1 * o.size * np.abs(np.sin(2 * np.pi * t))
        elif o.motion == "slide":
            # The first camera's right is world -x (it looks along +z with +y up).
            pos[:, 0] = o.x - o.slide_dir * SLIDE_DISTANCE * (t - 0.5)
        out.append((pos, yaw))
    return out


# ---------------------------------------------------------------------------------------------
# Primitive intersections in object-local coordinates (y up, base on y = 0, half-width s).
# Each returns (t, normal) with t = inf where missed; arrays are (F, P) and (F, P, 3).
# ---------------------------------------------------------------------------------------------

def _convex(o, d, normals: np.ndarray, offsets: np.ndarray):
    """Ray against the intersection of half-spaces n.x <= c (cube, pyramid)."""
    denom = d @ normals.T
    num = offsets - o @ normals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        tk = num / denom
    entering = denom < 0
    t_in = np.where(entering, tk, -np.inf).max(-1)
    t_out = np.where(denom > 0, tk, np.inf).min(-1)
    parallel_out = ((denom == 0) & (num < 0)).any(-1)
    hit = (t_in <= t_out) & (t_in > NEAR) & ~parallel_out
    t = np.where(hit, t_in, np.inf)
    k = np.where(entering, tk, -np.inf).argmax(-1)
    return t, normals[k]


def _box_planes(s: float):
    n = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=_F32)
    c = np.array([s, s, 2 * s, 0, s, s], dtype=_F32)
    return n, c


def _pyramid_planes(s: float):
    h = 2.0 * s
    sides = []
    for ax, sg in ((0, 1), (0, -1), (2, 1), (2, -1)):
        n = np.zeros(3)
        n[ax], n[1] = sg * h, s
        sides.append(n / np.linalg.norm(n))
    n = np.array(sides + [[0, -1, 0]], dtype=_F32)
    c = np.array([(s * h) / np.linalg.norm([h, s])] * 4 + [0.0], dtype=_F32)
    return n, c


def _sphere(o, d, s: float):
    oc = o - np.array([0, s, 0], dtype=_F32)
    a = (d * d).sum(-1)
    b = (oc * d).sum(-1)
    c = (oc * oc).sum(-1) - s * s
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0))
    t = (-b - sq) / a
    t = np.where((disc >= 0) & (t > NEAR), t, np.inf)
    n = oc + t[..., None] * d
    return t, n / s


def _cylinder(o, d, s: float, h: float):
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - s * s
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
    y = o[..., 1] + t_side * d[..., 1]
    t_side = np.where((disc >= 0) & (a > 1e-12) & (t_side > NEAR) & (y >= 0) & (y <= h), t_side, np.inf)
    t_cap, n_cap = _caps(o, d, lambda y: np.full_like(y, s), h, top=True)
    n_side = o + t_side[..., None] * d
    n_side = n_side * np.array([1, 0, 1], dtype=_F32) / s
    use_cap = t_cap < t_side
    return np.minimum(t_side, t_cap), np.where(use_cap[..., None], n_cap, n_side)


def _cone(o, d, s: float, h: float):
    # x^2 + z^2 = (k (h - y))^2 with k = s / h, for 0 <= y <= h.
    k2 = (s / h) ** 2
    oy = h - o[..., 1]
    a = d[..., 0] ** 2 + d[..., 2] ** 2 - k2 * d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2] + k2 * oy * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - k2 * oy ** 2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r1, r2 = (-b - sq) / a, (-b + sq) / a
    best = np.full(a.shape, np.inf, dtype=_F32)
    for r in (r2, r1):  # r1 last so the nearer valid root wins
        y = o[..., 1] + r * d[..., 1]
        ok = (disc >= 0) & np.isfinite(r) & (r > NEAR) & (y >= 0) & (y <= h)
        best = np.where(ok & (r < best), r, best)
    p = o + best[..., None] * d
    radial = p * np.array([1, 0, 1], dtype=_F32)
    rn = np.linalg.norm(radial, axis=-1, keepdims=True) + 1e-9
    n_side = np.concatenate([radial / rn, np.full(rn.shape, s / h, dtype=_F32)], -1)[..., [0, 2, 1]]
    n_side /= np.linalg.norm(n_side, axis=-1, keepdims=True)
    t_cap, n_cap = _caps(o, d, lambda y: np.full_like(y, s), h, top=False)
    use_cap = t_cap < best
    return np.minimum(best, t_cap), np.where(use_cap[..., None], n_cap, n_side)


def _caps(o, d, radius_at, h: float, top: bool):
    """Flat discs: the bottom at y = 0 and, for cylinders, the top at y = h."""
    t_best = np.full(o.shape[:-1], np.inf, dtype=_F32)
    n_best = np.zeros(o.shape, dtype=_F32)
    for y0, ny in ([(0.0, -1.0), (h, 1.0)] if top else [(0.0, -1.0)]):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (y0 - o[..., 1]) / d[..., 1]
        px = o[..., 0] + t * d[..., 0]
        pz = o[..., 2] + t * d[..., 2]
        ok = (t > NEAR) & (px * px + pz * pz <= radius_at(t) ** 2) & (t < t_best)
        t_best = np.where(ok, t, t_best)
        n_best = np.where(ok[..., None], np.array([0, ny, 0], dtype=_F32), n_best)
    return t_best, n_best


def _intersect_object(shape: str, s: float, o_l, d_l):
    if shape == "sphere":
        return _sphere(o_l, d_l, s)
    if shape == "cube":
        return _convex(o_l, d_l, *_box_planes(s))
    if shape == "pyramid":
        return _convex(o_l, d_l, *_pyramid_planes(s))
    if shape == "cylinder":
        return _cylinder(o_l, d_l, s, 2.0 * s)
    if shape == "cone":
        return _cone(o_l, d_l, s, 2.4 * s)
    raise ValueError(f"unknown shape {shape!r}")


def _to_local(points, dirs, pos, yaw):
    """World -> object frame for a batch of rays; pos (N,3) and yaw (N,) are per ray."""
    c = np.cos(yaw).astype(_F32)
    s = np.sin(yaw).astype(_F32)
    p = points - pos.astype(_F32)

    def rot(v):
        return np.stack([c * v[..., 0] - s * v[..., 2], v[..., 1], s * v[..., 0] + c * v[..., 2]], -1)
    return rot(p), rot(dirs), (c, s)


def _to_world_normal(n, cs):
    c, s = cs
    return np.stack([c * n[..., 0] + s * n[..., 2], n[..., 1], -s * n[..., 0] + c * n[..., 2]], -1)


def _trace_objects(scene: Scene, poses, origins, dirs, frame_of_ray, want_normals: bool = True):
    """Nearest object hit for flat rays (N, 3): t (N,), object index (N,) (-1 none), local point, normal.

    A bounding-sphere test first keeps the exact (costly) intersection to the few rays near an object.
    """
    n_rays = dirs.shape[0]
    t_best = np.full(n_rays, np.inf, dtype=_F32)
    idx = np.full(n_rays, -1, dtype=np.int8)
    n_best = np.zeros((n_rays, 3), dtype=_F32) if want_normals else None
    p_local = np.zeros((n_rays, 3), dtype=_F32) if want_normals else None
    a = np.einsum("ij,ij->i", dirs, dirs)
    for i, (obj, (pos, yaw)) in enumerate(zip(scene.objects, poses)):
        centre = (pos + np.array([0.0, 1.2 * obj.size, 0.0])).astype(_F32)
        oc = origins - centre[frame_of_ray]
        b = np.einsum("ij,ij->i", oc, dirs)
        c = np.einsum("ij,ij->i", oc, oc) - _F32((1.9 * obj.size) ** 2)
        cand = np.nonzero(b * b - a * c >= 0)[0]
        if cand.size == 0:
            continue
        f = frame_of_ray[cand]
        o_l, d_l, cs = _to_local(origins[cand], dirs[cand], pos[f], yaw[f])
        t, n = _intersect_object(obj.shape, obj.size, o_l, d_l)
        closer = t < t_best[cand]
        sel = cand[closer]
        t_best[sel] = t[closer]
        idx[sel] = i
        if want_normals:
            n_best[sel] = _to_world_normal(n, cs)[closer]
            p_local[sel] = (o_l + t[..., None] * d_l)[closer]
    return t_best, idx, p_local, n_best


def _filtered_square(x, w):
    """Box-filtered square wave in [-1, 1] with period 2: keeps far checkers from aliasing."""
    def tri(v):
        return np.abs(v * 0.5 - np.floor(v * 0.5) - 0.5)
    w = np.maximum(w, 1e-4)
    return 2.0 * (tri(x - 0.5 * w) - tri(x + 0.5 * w)) / w


def _grout(x, w, half_width: float = 0.06):
    """Coverage of thin lines at integer x, blurred toward their mean where pixels are large."""
    dist = np.abs(x - np.round(x))
    near = np.clip((half_width + 0.5 * w - dist) / np.maximum(w, 1e-3), 0, 1)
    sharp = np.clip(1.0 / (3.0 * np.maximum(w, 1e-3)), 0, 1)
    return near * sharp + 2 * half_width * (1 - sharp)


def _ground_albedo(scene: Scene, px, pz, footprint):
    light, dark = (np.array(c, dtype=_F32) for c in GROUND_PALETTES[scene.palette % len(GROUND_PALETTES)])
    cell = 0.5
    x, z, w = px / cell, pz / cell, footprint / cell
    if scene.ground == "checker":
        m = 0.5 - 0.5 * _filtered_square(x, w) * _filtered_square(z, w)
    elif scene.ground == "stripes":
        # Diagonal stripes with a faint cross-hatch, so motion along the stripes is still visible.
        m = 0.5 + 0.5 * _filtered_square((x + z) * 0.7, w * 1.4)
        m = 0.75 * m + 0.25 * (0.5 + 0.5 * _filtered_square((x - z) * 1.4, w * 2.8))
    else:  # tiles: two close tones with dark grout lines between them
        tone = 0.5 - 0.5 * _filtered_square(x, w) * _filtered_square(z, w)
        grout = np.maximum(_grout(x, w), _grout(z, w))
        m = (0.55 + 0.45 * tone) * (1 - grout)
    m = m[..., None]
    return dark + (light - dark) * m


def _sky(scene: Scene, dirs_world):
    d = dirs_world / np.linalg.norm(dirs_world, axis=-1, keepdims=True)
    horizon, zenith = (np.array(c, dtype=_F32) for c in _SKY_COLORS[scene.sky])
    el = np.clip(d[..., 1], 0, 1)[..., None]
    col = horizon + (zenith - horizon) * np.sqrt(el)
    # Soft procedural clouds, fixed in world directions, so pans over the sky carry texture.
    az = np.arctan2(d[..., 0], d[..., 2])
    e = np.arcsin(np.clip(d[..., 1], -1, 1))
    n = (np.sin(7 * az + 1.3) * np.sin(9 * e + 0.4) + 0.6 * np.sin(13 * az - 5 * e + 2.1)
         + 0.4 * np.sin(23 * az + 17 * e))
    cloud = np.clip((n - 0.35) * 0.9, 0, 1)[..., None] * (0.35 + 0.4 * (scene.sky != "overcast"))
    return col + (np.array([1.0, 1.0, 1.0], dtype=_F32) - col) * cloud


def render_scene(scene: Scene, num_frames: int = 17, height: int = 64, width: int = 64,
                 relative_poses: np.ndarray | None = None) -> dict:
    """Trace a scene along its camera moves; returns frames, depth, K, c2w, instance."""
    validate_scene(scene)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _render(scene, num_frames, height, width, relative_poses)


def _render(scene: Scene, num_frames: int, height: int, width: int, relative_poses: np.ndarray | None) -> dict:
    K = intrinsics(height, width)
    rel = relative_poses if relative_poses is not None else camera_trajectory(
        scene.moves, num_frames, focus=CAMERA_DISTANCE)
    c2w = initial_pose()[None] @ rel
    # Rays: unit z in camera coordinates, so t equals z-depth.
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    R = c2w[:, :3, :3].astype(_F32)
    dirs = np.einsum("fij,pj->fpi", R, d_cam.astype(_F32))                 # (F, P, 3)
    origins = np.broadcast_to(c2w[:, None, :3, 3].astype(_F32), dirs.shape)
    F, P = dirs.shape[:2]
    dirs, origins = dirs.reshape(-1, 3), origins.reshape(-1, 3)
    frame_of_ray = np.repeat(np.arange(F), P)
    poses = object_poses(scene, num_frames)

    t_obj, obj_idx, p_local, n_obj = _trace_objects(scene, poses, origins, dirs, frame_of_ray)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_gnd = -origins[..., 1] / dirs[..., 1]
    gx = origins[..., 0] + t_gnd * dirs[..., 0]
    gz = origins[..., 2] + t_gnd * dirs[..., 2]
    t_gnd = np.where((dirs[..., 1] < 0) & (t_gnd > NEAR) & (gx * gx + gz * gz < GROUND_RADIUS ** 2), t_gnd, np.inf)

    hit_obj = t_obj < t_gnd
    t = np.where(hit_obj, t_obj, t_gnd)
    hit = np.isfinite(t)
    instance = np.where(hit_obj, obj_idx.astype(np.int16) + 1, np.where(hit, 0, -1)).astype(np.int8)
    t0 = np.where(hit, t, 0.0).astype(_F32)
    points = origins + t0[..., None] * dirs

    # Albedo, computed only where each surface is seen.
    albedo = np.zeros(dirs.shape, dtype=_F32)
    g = np.nonzero(hit & ~hit_obj)[0]
    dg = dirs[g]
    grazing = np.abs(dg[:, 1]) / np.linalg.norm(dg, axis=-1)
    footprint = t0[g] / K[0, 0] * np.minimum(1.0 / np.maximum(grazing, 0.05), 8.0) * 1.2
    albedo[g] = _ground_albedo(scene, points[g, 0], points[g, 2], footprint)
    for i, obj in enumerate(scene.objects):
        m = np.nonzero(hit_obj & (obj_idx == i))[0]
        base = np.array(COLORS[obj.color], dtype=_F32)
        pl = p_local[m] / (obj.size / 1.4)
        chk = (np.floor(pl).sum(-1) % 2)[:, None]
        # Dark objects get lighter texture, light objects darker texture: always visible.
        albedo[m] = base * (1 - 0.2 * chk) if base.mean() > 0.2 else base + 0.12 * chk

    # Lambertian shading with hard shadows from a directional light.
    normals = np.where(hit_obj[..., None], n_obj, np.array([0, 1, 0], dtype=_F32))
    ndotl = np.clip(normals @ LIGHT_DIR.astype(_F32), 0, 1)
    facing = np.nonzero(hit & (ndotl > 0))[0]  # back-facing points are dark anyway
    t_sh = np.full(hit.shape, np.inf, dtype=_F32)
    t_sh[facing] = _trace_objects(
        scene, poses, points[facing] + normals[facing] * 1e-3,
        np.broadcast_to(LIGHT_DIR.astype(_F32), (facing.size, 3)), frame_of_ray[facing], want_normals=False)[0]
    lit = np.where(np.isfinite(t_sh), 0.0, 1.0).astype(_F32)
    color = albedo * (AMBIENT + (1 - AMBIENT) * ndotl * lit)[..., None]
    sky = np.nonzero(~hit)[0]
    color[sky] = _sky(scene, dirs[sky])

    frames = (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(F, height, width, 3)
    return {
        "frames": frames,
        "depth": t0.reshape(F, height, width),
        "K": K,
        "c2w": c2w,
        "instance": instance.reshape(F, height, width),
    }


MAX_PROMPT_CHARS = 2000


def render_clip(prompt: str, num_frames: int = 17, height: int = 64, width: int = 64, seed: int = 0,
                scene: Scene | None = None) -> RenderedClip:
    """Render a TinyWorld clip for a prompt (or an explicit scene) with exact ground truth.

    Unknown words are ignored with a warning listing them; a prompt with no known object gets the
    default scene, also with a warning. The seed decides layout, ground palette and what the
    prompt leaves open.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(prompt)} characters; TinyWorld accepts at most {MAX_PROMPT_CHARS}")
    for name, val, lo, hi in (("num_frames", num_frames, 1, 257), ("height", height, 8, 1024),
                              ("width", width, 8, 1024)):
        if not isinstance(val, (int, np.integer)) or not lo <= val <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {val!r}")
    notes: list[str] = []
    if scene is None:
        scene, notes = scene_from_prompt(prompt, seed=seed, warn=False)
        for n in notes:
            warnings.warn(n, stacklevel=2)
    out = render_scene(scene, num_frames, height, width)
    return RenderedClip(scene=scene, prompt=prompt, warnings=notes, **out)
