"""Fused point cloud from all frames and poses, its exports, and a z-buffered splat renderer.

The cloud keeps pixels with depth in (0, depth_max_rel x median depth]: the far ground at grazing
angles and the sky carry no usable geometry. Voxel size is 1.5 pixels' footprint at the median
depth: about the input's resolution, and a learned depth (whose frames do not land on the same
voxels, 3x the points at one pixel) stays cheap to filter. The re-render metric does not use this
cloud (see metrics.render_leave_one_out); it is the export and the novel-view render.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.geometry.projection import backproject, open3d_single_thread


def fusion_mask(depth: np.ndarray, confidence: np.ndarray | None = None, depth_max_rel: float = 2.5) -> np.ndarray:
    """Pixels (F, H, W) that enter the fused cloud (and that the re-render is judged on)."""
    valid = depth[depth > 0]
    dmax = depth_max_rel * float(np.median(valid)) if valid.size else 0.0
    mask = (depth > 0) & (depth <= dmax)
    if confidence is not None:
        mask &= confidence >= 0.5
    return mask


def voxel_size_for(depth: np.ndarray, K: np.ndarray, voxel_px: float = 1.0) -> float:
    valid = depth[depth > 0]
    med = float(np.median(valid)) if valid.size else 1.0
    return voxel_px * med / float(K[0, 0])


def fuse_point_cloud(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                     confidence: np.ndarray | None = None, voxel_px: float = 1.5,
                     outlier_neighbors: int = 12, outlier_std: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) float64 and colours (N, 3) float32 in [0, 1].

    Open3D voxel down-sampling averages points and colours per voxel (so a surface seen
    inconsistently across frames blurs), then statistical outlier removal drops stray points.
    """
    mask = fusion_mask(depth, confidence)
    cam = backproject(depth.astype(np.float64), K)                            # (F, H, W, 3)
    world = np.einsum("fij,fhwj->fhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]
    pts = world[mask]
    cols = frames[mask].astype(np.float64) / 255.0
    if len(pts) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.float32)
    with open3d_single_thread() as o3d:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        pc.colors = o3d.utility.Vector3dVector(cols)
        pc = pc.voxel_down_sample(voxel_size_for(depth, K, voxel_px))
        if len(pc.points) > outlier_neighbors:
            pc, _ = pc.remove_statistical_outlier(nb_neighbors=outlier_neighbors, std_ratio=outlier_std)
        points = np.asarray(pc.points)
        colors = np.asarray(pc.colors).astype(np.float32)
    # Open3D's voxel hash map has no fixed order: sort so identical inputs give identical arrays.
    order = np.lexsort((points[:, 2], points[:, 1], points[:, 0]))
    return points[order], colors[order]


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    import open3d as o3d

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    pc.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colors, np.float64), 0, 1))
    if not o3d.io.write_point_cloud(str(path), pc):
        raise OSError(f"open3d could not write {path}")
    return path


def write_glb(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    """Point-cloud .glb for gr.Model3D (open3d writes no .glb; trimesh does)."""
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.concatenate([np.clip(np.asarray(colors) * 255 + 0.5, 0, 255).astype(np.uint8),
                           np.full((len(points), 1), 255, np.uint8)], 1)
    trimesh.Scene(trimesh.PointCloud(np.asarray(points, np.float64), colors=rgba)).export(str(path))
    return path


def render_points(points: np.ndarray, colors: np.ndarray, K: np.ndarray, c2w: np.ndarray, height: int, width: int,
                  depth_tolerance: float = 0.03, fill_holes: int = 2,
                  sigma_px: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a coloured point cloud at cameras c2w (V, 4, 4): images (V, H, W, 3) float32 in [0, 1],
    depth (V, H, W) (0 = empty) and a coverage mask (V, H, W) bool. See `splat` for the splatting."""
    v_n = len(c2w)
    if len(points) == 0:
        images = np.zeros((v_n, height, width, 3), np.float32)
        depth = np.zeros((v_n, height, width), np.float32)
        return images, depth, depth > 0
    w2c = np.linalg.inv(c2w)
    cam = np.einsum("vij,nj->vni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]   # (V, N, 3)
    view = np.broadcast_to(np.arange(v_n)[:, None], cam.shape[:2])
    cols = np.broadcast_to(np.asarray(colors, np.float32)[None], cam.shape)
    return splat(cam.reshape(-1, 3), cols.reshape(-1, 3), view.reshape(-1), v_n, K, height, width,
                 depth_tolerance, fill_holes, sigma_px)


def splat(cam_points: np.ndarray, colors: np.ndarray, view: np.ndarray, num_views: int, K: np.ndarray,
          height: int, width: int, depth_tolerance: float = 0.03, fill_holes: int = 2,
          sigma_px: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffered splatting of camera-space points (M, 3) into their views (M,) -> images, depth, coverage.

    Each point splats onto the 4 pixels around its projection, weighted bilinearly (sigma_px None)
    or by a Gaussian of its distance to each pixel centre (sigma_px: a small splat, so that where
    many points land the ones nearest a pixel centre decide it and the render stays sharp). A
    z-buffer over the points falling inside each pixel finds its nearest surface, and the points
    within `depth_tolerance` (relative) of that surface are blended: anti-aliasing that lets
    neither hidden surfaces nor a neighbour's nearer surface through. Small holes are filled by
    normalised 3x3 averaging, `fill_holes` times.
    """
    hw = height * width
    images = np.zeros((num_views, height, width, 3), np.float32)
    depth = np.zeros((num_views, height, width), np.float32)
    if len(cam_points) == 0:
        return images, depth, depth > 0
    z = cam_points[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    u = cam_points[:, 0] / zs * K[0, 0] + (K[0, 2] - 0.5)   # continuous pixel index (centres at integers)
    v = cam_points[:, 1] / zs * K[1, 1] + (K[1, 2] - 0.5)
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    if sigma_px is None:
        wu = ((1 - fu), fu)
        wv = ((1 - fv), fv)
    else:
        g = np.float32(-0.5 / sigma_px ** 2)
        wu = (np.exp(g * fu * fu), np.exp(g * (1 - fu) ** 2))
        wv = (np.exp(g * fv * fv), np.exp(g * (1 - fv) ** 2))
    keys, zs_, ws, idx, owns = [], [], [], [], []
    for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
        wgt = wu[du] * wv[dv]
        uu, vv = u0 + du, v0 + dv
        ok = front & (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height) & (wgt > 1e-3)
        keys.append((view[ok] * hw + vv[ok] * width + uu[ok]).astype(np.int64))
        zs_.append(z[ok])
        ws.append(wgt[ok])
        idx.append(np.nonzero(ok)[0])
        owns.append(((fu[ok] >= 0.5) == du) & ((fv[ok] >= 0.5) == dv))   # the pixel the point falls in
    key, zz, wt, pid, own = (np.concatenate(x) for x in (keys, zs_, ws, idx, owns))
    # The z-buffer is set by points falling inside a pixel; a point's spill-over onto a neighbour
    # must not hide that neighbour's own surface (on a receding floor every next row is nearer).
    # Pixels nothing falls into take the nearest spill-over.
    zbuf = np.full(num_views * hw, np.inf, zz.dtype)   # same dtype: ufunc.at is slow when it must cast
    np.minimum.at(zbuf, key[own], zz[own])
    spill = np.full(num_views * hw, np.inf, zz.dtype)
    np.minimum.at(spill, key, zz)
    zbuf = np.where(np.isfinite(zbuf), zbuf, spill)
    near = np.abs(zz - zbuf[key]) <= zbuf[key] * depth_tolerance
    key, zz, wt, pid = key[near], zz[near], wt[near], pid[near]
    wsum = np.bincount(key, wt, minlength=num_views * hw)
    c = colors[pid]
    col = np.stack([np.bincount(key, wt * c[:, i], minlength=num_views * hw) for i in range(3)], -1)
    dsum = np.bincount(key, wt * zz, minlength=num_views * hw)
    covered = wsum > 1e-6
    images = np.where(covered[:, None], col / np.maximum(wsum, 1e-12)[:, None], 0).reshape(num_views, height, width, 3)
    depth = np.where(covered, dsum / np.maximum(wsum, 1e-12), 0).reshape(num_views, height, width)
    covered = covered.reshape(num_views, height, width)
    if fill_holes:
        images, depth, covered = _fill_holes(images, depth, covered, fill_holes)
    return images.astype(np.float32), depth.astype(np.float32), covered


def _fill_holes(images: np.ndarray, depth: np.ndarray, covered: np.ndarray, passes: int):
    """Fill uncovered pixels with the mean of covered 3x3 neighbours (normalised convolution)."""
    import cv2

    images, depth, covered = images.copy(), depth.copy(), covered.copy()
    for _ in range(passes):
        for i in range(len(images)):
            m = covered[i].astype(np.float32)
            if m.all():
                continue
            msum = cv2.blur(m, (3, 3), borderType=cv2.BORDER_CONSTANT)
            csum = cv2.blur(images[i] * m[..., None], (3, 3), borderType=cv2.BORDER_CONSTANT)
            dsum = cv2.blur(depth[i] * m, (3, 3), borderType=cv2.BORDER_CONSTANT)
            fill = (~covered[i]) & (msum > 0.2)
            images[i][fill] = csum[fill] / msum[fill, None]
            depth[i][fill] = dsum[fill] / msum[fill]
            covered[i] |= fill
    return images, depth, covered
