"""Pinhole camera math shared by the geometry engine.

Conventions (docs/architecture.md): pixel (u, v) has its centre at (u + 0.5, v + 0.5); depth is
z along the optical axis with 0 = nothing hit; c2w maps OpenCV camera axes to the world.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

TINYWORLD_HFOV_DEG = 60.0


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """TinyWorld's K (60 degree horizontal field of view, square pixels, centred principal point)."""
    try:
        from studio.tinyworld import intrinsics
    except ImportError:  # the renderer is optional for the geometry engine
        fx = 0.5 * width / np.tan(np.deg2rad(TINYWORLD_HFOV_DEG) / 2)
        return np.array([[fx, 0.0, width / 2], [0.0, fx, height / 2], [0.0, 0.0, 1.0]])
    return np.asarray(intrinsics(height, width), dtype=np.float64)


def pixel_rays(height: int, width: int, K: np.ndarray) -> np.ndarray:
    """Camera-space rays with unit z for every pixel centre, (H, W, 3): depth * ray = point."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Depth (..., H, W) -> camera-space points (..., H, W, 3)."""
    h, w = depth.shape[-2:]
    return depth[..., None] * pixel_rays(h, w, K)


def project(points: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-space points (N, 3) -> continuous pixel indices (u, v) and z; u = x*fx/z + cx - 0.5."""
    z = points[:, 2]
    safe = np.where(z > 1e-9, z, 1.0)
    u = points[:, 0] / safe * K[0, 0] + K[0, 2] - 0.5
    v = points[:, 1] / safe * K[1, 1] + K[1, 2] - 0.5
    return u, v, z


def transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Geodesic angle of rotation matrices (..., 3, 3) in degrees."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def relative_to_first(c2w: np.ndarray) -> np.ndarray:
    """Re-express poses (F, 4, 4) in the first camera's frame (frame 0 becomes identity)."""
    return np.linalg.inv(c2w[0])[None] @ c2w


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform without a general matrix inverse."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


@contextmanager
def open3d_single_thread() -> Iterator[object]:
    """Open3D with one thread: its parallel reductions sum in varying order, so results differ in
    the last bits from run to run (and then chained poses drift apart). Yields the module."""
    import open3d as o3d

    before = o3d.utility.get_max_threads()
    o3d.utility.set_max_threads(1)
    try:
        yield o3d
    finally:
        o3d.utility.set_max_threads(before)


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run torch with `num_threads` intra-op threads (None: leave as is), restored afterwards.

    The small nets here (depth, CLIP) run 17 frames at 64x64: on the shared 2-core machine a
    second intra-op thread mostly spins waiting for a core (the CLIP scorer took 1.7-2.2 s wall
    with two threads against 0.05-0.08 s with one; the depth net 1.4 s against 0.19 s)."""
    import torch

    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
