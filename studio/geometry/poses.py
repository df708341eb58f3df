"""Camera poses from RGB-D frames: chained Open3D odometry, checked pair by pair, with fallbacks.

Every consecutive pair (i, i+1) gets a relative motion:
1. Open3D hybrid RGB-D odometry (settings from environment.md, depth gates scaled to the scene);
   on 64x64 images it lands within a few tenths of a degree, sometimes far off while still
   reporting success, so its result only seeds
2. a direct Gauss-Newton refinement of the photometric + relative-depth re-projection residual
   at native resolution (all pairs batched), then
3. a check: the refined motion must explain the pair (residual below an absolute bound and no
   worse than standing still), keep enough overlap, and be a plausible step for a video camera.
Pairs that fail try KLT feature tracks + PnP with depth (refined and checked the same way); if
nothing passes they get the identity and a low confidence. Every pair is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from studio.geometry.projection import backproject, open3d_single_thread, rotation_angle_deg


@dataclass
class OdometrySettings:
    """Knobs of the pose stage; defaults measured on 64x64 and 128x128 TinyWorld clips."""

    open3d_max_side: int = 64         # Open3D only seeds: larger images are area-downsampled to this (min side)
    iterations: tuple[int, ...] = (10, 5)  # per pyramid level; the direct refinement does the fine work
    depth_diff_rel: float = 0.05      # Open3D depth_diff_max as a fraction of the median depth
    depth_max_rel: float = 2.5        # Open3D depth_max as a multiple of the median depth
    refine_iterations: int = 8        # direct Gauss-Newton refinement of every candidate
    refine_pixels: int = 2048         # pixels per pair the refinement samples (a diagonal lattice)
    outlier_factor: float = 2.5       # a pair whose residual exceeds this x the clip median is retried
    max_step_rotation_deg: float = 12.0   # a video frame step turning more than this is implausible
    max_step_translation_rel: float = 0.25  # ... or moving more than this x median depth
    min_overlap: float = 0.25         # fraction of pixels of frame i+1 that must land in frame i
    max_residual: float = 0.12        # a motion explaining the pair worse than this is not trusted
    pnp_min_inliers: int = 12
    estimate_scale: bool = False      # also fit each frame's depth scale (learned depth drifts; ground truth does not)


@dataclass
class PairReport:
    """How the motion between frames i and i+1 was obtained and whether it passed the check."""

    pair: tuple[int, int]
    method: str                 # "odometry", "pnp", "identity" (static pair) or "identity-fallback"
    ok: bool
    residual: float             # re-projection residual of the chosen motion
    identity_residual: float    # the same for "no motion": a pose must do better than this
    overlap: float
    rotation_deg: float
    translation: float
    candidates: dict[str, float] = field(default_factory=dict)  # residual of every tried method
    depth_scale: float = 1.0    # frame i+1's depth relative to frame i's (1 unless the scale is estimated)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PoseResult:
    c2w: np.ndarray            # (F, 4, 4) relative to frame 0
    confidence: np.ndarray     # (F,) 1 where every step up to the frame passed the check
    report: list[PairReport]
    depth_scale: np.ndarray | None = None   # (F,) factor bringing each frame's depth to frame 0's scale


def _gray(frames: np.ndarray) -> np.ndarray:
    f = frames.astype(np.float32) / 255.0
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def pair_residual(src_gray: np.ndarray, src_depth: np.ndarray, tgt_gray: np.ndarray, tgt_depth: np.ndarray,
                  K: np.ndarray, T: np.ndarray) -> tuple[float, float]:
    """How well T (source camera -> target camera) explains a frame pair: (residual, overlap).

    Residual = mean photometric error (grey levels in [0, 1]) + mean relative depth error, both
    truncated so occlusion boundaries do not dominate; computed over source pixels that land on
    valid target pixels. Overlap = that pixel count over the source's valid pixels.
    """
    return pair_residuals(np.stack([src_gray, tgt_gray]), np.stack([src_depth, tgt_depth]), K, [(0, 1)],
                          np.asarray(T)[None])[0]


def pair_residuals(gray: np.ndarray, depth: np.ndarray, K: np.ndarray, pairs: list[tuple[int, int]],
                   T: np.ndarray, scale: np.ndarray | None = None) -> list[tuple[float, float]]:
    """pair_residual for many (src, tgt) pairs of one clip at once: T (P, 4, 4) -> [(residual, overlap)].

    scale (P,): the source depth's scale relative to the target's (source points s * X); 1 if None.
    """
    num_pairs = len(pairs)
    if num_pairs == 0:
        return []
    _, h, w = depth.shape
    src = np.array([p[0] for p in pairs])
    tgt = np.array([p[1] for p in pairs])
    d_src = depth[src].reshape(num_pairs, -1).astype(np.float64)
    valid = d_src > 0
    if scale is not None:
        d_src = d_src * np.asarray(scale, np.float64)[:, None]
    X = backproject(np.ones((h, w)), K).reshape(1, -1, 3) * d_src[..., None]
    T = np.asarray(T, np.float64)
    # A diverged candidate (NaN/inf in T or the depth) projects nowhere rather than to a bad index.
    with np.errstate(invalid="ignore", over="ignore"):
        P = X @ np.swapaxes(T[:, :3, :3], 1, 2) + T[:, None, :3, 3]
    finite = np.isfinite(P).all(-1)
    z = np.where(finite, P[..., 2], -1.0)
    safe = np.where(z > 1e-6, z, 1.0)
    u = np.where(finite, P[..., 0] / safe * K[0, 0] + K[0, 2] - 0.5, -1.0)
    v = np.where(finite, P[..., 1] / safe * K[1, 1] + K[1, 2] - 0.5, -1.0)
    inb = valid & (z > 1e-6) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    base = (tgt * h * w)[:, None]
    near = base + np.clip(np.rint(v), 0, h - 1).astype(np.int64) * w + np.clip(np.rint(u), 0, w - 1).astype(np.int64)
    d_t = depth.reshape(-1)[near].astype(np.float64)
    has = inb & (d_t > 0)
    u0 = np.clip(np.floor(u), 0, w - 2)
    v0 = np.clip(np.floor(v), 0, h - 2)
    a, b = u - u0, v - v0
    i00 = base + v0.astype(np.int64) * w + u0.astype(np.int64)
    g = gray.reshape(-1).astype(np.float64)
    sampled = ((1 - a) * (1 - b) * g[i00] + a * (1 - b) * g[i00 + 1]
               + (1 - a) * b * g[i00 + w] + a * b * g[i00 + w + 1])
    photo = np.minimum(np.abs(sampled - gray[src].reshape(num_pairs, -1)), 0.25)
    rel = np.minimum(np.abs(z - d_t) / np.where(has, d_t, 1.0), 0.25)
    n_valid, n_inb, n_has = valid.sum(1), inb.sum(1), has.sum(1)
    photo_mean = np.where(has, photo, 0).sum(1) / np.maximum(n_has, 1)
    rel_mean = np.where(has, rel, 0).sum(1) / np.maximum(n_has, 1)
    out = []
    for k in range(num_pairs):
        if n_valid[k] == 0:
            out.append((1.0, 0.0))
        elif n_inb[k] < 16:
            out.append((1.0, float(n_inb[k] / n_valid[k])))
        elif n_has[k] < 16:
            out.append((1.0, float(n_has[k] / n_valid[k])))
        else:
            out.append((float(photo_mean[k] + rel_mean[k]), float(n_has[k] / n_valid[k])))
    return out


def _skew(p: np.ndarray) -> np.ndarray:
    z = np.zeros_like(p[:, 0])
    return np.stack([np.stack([z, -p[:, 2], p[:, 1]], -1), np.stack([p[:, 2], z, -p[:, 0]], -1),
                     np.stack([-p[:, 1], p[:, 0], z], -1)], 1)


def _so3_exp(omega: np.ndarray) -> np.ndarray:
    """Rodrigues' formula for a batch of rotation vectors (P, 3) -> (P, 3, 3)."""
    theta = np.linalg.norm(omega, axis=1)
    k = omega / np.maximum(theta, 1e-12)[:, None]
    Kx = _skew(k)
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * Kx + (1 - c) * (Kx @ Kx)


def refine_direct(gray: np.ndarray, depth: np.ndarray, K: np.ndarray, pairs: list[tuple[int, int]],
                  T_init: np.ndarray, iterations: int = 8, depth_weight: float = 1.0, stride: int = 1,
                  estimate_scale: bool = False, max_log_scale: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton on the check's own photometric + relative-depth residual, all pairs at once.

    Returns (T (P, 4, 4), scale (P,)). With estimate_scale the source depth's scale relative to
    the target's is a 7th unknown (source points s * X): a learned monocular depth drifts in
    scale from frame to frame (the TinyWorld net by 25 % over a push-in), which a rigid motion
    can only absorb by bending the path. |log s| is kept within max_log_scale.

    Open3D's odometry lands within a few tenths of a degree on 64x64 images; minimising the same
    residual the check uses, at native resolution with bilinear sampling and occlusions dropped,
    brings that to a few hundredths. Pairs are (src, tgt); T maps src camera points into tgt.
    Left-multiplied increments: T <- exp(xi) T.

    Layout: every pair's source pixels are padded to one length N, so each iteration is a handful
    of (P, N) array operations and two batched (6 x N) @ (N x 6) products; pixels that leave the
    image, hit the sky or fail the gates get weight 0 instead of being compacted out.
    """
    num_pairs = len(pairs)
    T = np.array(T_init, dtype=np.float64, copy=True)
    scale = np.ones(num_pairs)
    if num_pairs == 0:
        return T, scale
    dof = 7 if estimate_scale else 6
    _, h, w = depth.shape
    src = np.array([p[0] for p in pairs])
    tgt = np.array([p[1] for p in pairs])
    D = depth.astype(np.float32)
    G = gray.astype(np.float32)
    frames_used = np.unique(tgt)
    gx, gy, dgx, dgy = (np.zeros((len(frames_used), h, w), np.float32) for _ in range(4))
    Dt, Gt = D[frames_used], G[frames_used]
    gx[:, :, 1:-1] = (Gt[:, :, 2:] - Gt[:, :, :-2]) / 2
    gy[:, 1:-1] = (Gt[:, 2:] - Gt[:, :-2]) / 2
    dgx[:, :, 1:-1] = (Dt[:, :, 2:] - Dt[:, :, :-2]) / 2
    dgy[:, 1:-1] = (Dt[:, 2:] - Dt[:, :-2]) / 2
    # One gather per bilinear corner fetches every map at once: columns depth, grey, gradients.
    maps = np.stack([Dt, Gt, gx, gy, dgx, dgy], -1).reshape(-1, 6)
    slot = np.searchsorted(frames_used, tgt)                      # pair -> row block of `maps`
    rays = backproject(np.ones((h, w)), K).reshape(-1, 3).astype(np.float32)
    # A diagonal lattice (stride 2: a checkerboard): every image row and column still contributes.
    uu, vv = np.meshgrid(np.arange(w), np.arange(h))
    sub = ((uu + vv) % stride == 0).reshape(-1)
    valid = (D[src].reshape(num_pairs, -1) > 0) & sub                # (P, HW)
    n_max = max(int(valid.sum(1).max()), 1)
    # Pad each pair's valid pixels to n_max: argsort puts the valid ones first, in pixel order.
    order = np.argsort(~valid, axis=1, kind="stable")[:, :n_max]
    live = np.take_along_axis(valid, order, 1)                        # (P, N) real pixels
    d_src = np.take_along_axis(D[src].reshape(num_pairs, -1), order, 1)
    X = rays[order] * d_src[..., None]                                # (P, N, 3) source points
    I_s = np.take_along_axis(G[src].reshape(num_pairs, -1), order, 1)
    base = (slot * (h * w))[:, None]
    fx, fy, cx, cy = (np.float32(x) for x in (K[0, 0], K[1, 1], K[0, 2] - 0.5, K[1, 2] - 0.5))
    active = np.ones(num_pairs, bool)
    for it in range(iterations):
        # Coarse gates first so large initial errors still find inliers, then tight ones.
        gate_d = 0.05 + 0.15 * max(0.0, 1.0 - it / 3)
        gate_ph = 0.15 + 0.15 * max(0.0, 1.0 - it / 3)
        R = (T[:, :3, :3] * scale[:, None, None]).astype(np.float32)
        t = T[:, None, :3, 3].astype(np.float32)
        P = X @ np.swapaxes(R, 1, 2) + t
        x, y, z = P[..., 0], P[..., 1], P[..., 2]
        inv_z = 1.0 / np.where(z > 1e-6, z, np.float32(1.0))
        u = x * inv_z * fx + cx
        v = y * inv_z * fy + cy
        inb = live & (z > 1e-6) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
        u0 = np.clip(np.floor(u), 0, w - 2)
        v0 = np.clip(np.floor(v), 0, h - 2)
        a, b = (u - u0)[..., None], (v - v0)[..., None]
        idx = base + v0.astype(np.int64) * w + u0.astype(np.int64)
        c00, c01, c10, c11 = maps[idx], maps[idx + 1], maps[idx + w], maps[idx + w + 1]
        m = (1 - b) * ((1 - a) * c00 + a * c01) + b * ((1 - a) * c10 + a * c11)
        # All four bilinear neighbours must have depth: no sampling across the sky boundary.
        ok = inb & (np.minimum(np.minimum(c00[..., 0], c01[..., 0]), np.minimum(c10[..., 0], c11[..., 0])) > 0)
        d_t = np.where(ok, m[..., 0], np.float32(1.0))
        r_ph = m[..., 1] - I_s
        r_d = (z - d_t) / d_t
        keep = ok & (np.abs(r_ph) < gate_ph) & (np.abs(r_d) < gate_d)  # occlusions: drop, do not fit
        counts = keep.sum(1)
        solvable = active & (counts >= 32)
        if not solvable.any():
            break
        wgt = keep.astype(np.float32)
        # d(u, v, z)/d xi for a left increment dP = omega x P + v.
        xz, yz = x * inv_z, y * inv_z
        gu, gv = m[..., 2] * fx, m[..., 3] * fy          # image gradient in u, v times focal
        hu, hv = m[..., 4] * fx, m[..., 5] * fy          # depth gradient likewise
        J_ph = np.stack([-gu * xz * yz - gv * (1 + yz * yz), gu * (1 + xz * xz) + gv * xz * yz,
                         -gu * yz + gv * xz, gu * inv_z, gv * inv_z, -(gu * xz + gv * yz) * inv_z], -1)
        inv_d = wgt * depth_weight / d_t
        J_d = np.stack([(y + hu * xz * yz + hv * (1 + yz * yz)) * inv_d,
                        (-x - hu * (1 + xz * xz) - hv * xz * yz) * inv_d,
                        (hu * yz - hv * xz) * inv_d, -hu * inv_z * inv_d, -hv * inv_z * inv_d,
                        (1 + (hu * xz + hv * yz) * inv_z) * inv_d], -1)
        if estimate_scale:
            # s <- s * exp(d): dP = (P - t) d.
            Q = P - t
            du_s = (Q[..., 0] - xz * Q[..., 2]) * inv_z
            dv_s = (Q[..., 1] - yz * Q[..., 2]) * inv_z
            J_ph = np.concatenate([J_ph, (gu * du_s + gv * dv_s)[..., None]], -1)
            J_d = np.concatenate([J_d, ((Q[..., 2] - hu * du_s - hv * dv_s) * inv_d)[..., None]], -1)
        J_ph *= wgt[..., None]
        r_ph = r_ph * wgt
        r_d = r_d * (wgt * depth_weight)
        Jt_ph, Jt_d = np.swapaxes(J_ph, 1, 2), np.swapaxes(J_d, 1, 2)
        H = (Jt_ph @ J_ph + Jt_d @ J_d).astype(np.float64)
        g = (Jt_ph @ r_ph[..., None] + Jt_d @ r_d[..., None])[..., 0].astype(np.float64)
        xi = np.zeros((num_pairs, dof))
        xi[solvable] = -np.linalg.solve(H[solvable] + 1e-9 * np.eye(dof), g[solvable][..., None])[..., 0]
        if estimate_scale:
            scale = np.exp(np.clip(np.log(scale) + xi[:, 6], -max_log_scale, max_log_scale))
        step = np.tile(np.eye(4), (num_pairs, 1, 1))
        step[:, :3, :3] = _so3_exp(xi[:, :3])
        step[:, :3, 3] = xi[:, 3:6]
        T = step @ T
        # A pair whose update is negligible after the coarse-gate phase is done.
        if it >= 3:
            active &= np.abs(xi).max(1) >= 1e-6
            if not active.any():
                break
    return T, scale


class PoseEstimator:
    """Chained pairwise pose estimation; see the module docstring for the strategy."""

    def __init__(self, frames: np.ndarray, depth: np.ndarray, K: np.ndarray,
                 settings: OdometrySettings | None = None):
        import open3d as o3d

        self.o3d = o3d
        self.s = settings or OdometrySettings()
        self.frames, self.depth, self.K = frames, depth.astype(np.float32), np.asarray(K, np.float64)
        self.num_frames, self.h, self.w = depth.shape
        valid = self.depth[self.depth > 0]
        self.median_depth = float(np.median(valid)) if valid.size else 1.0
        self.gray = _gray(frames)
        self._rgbd: dict[int, object] = {}
        # Integer downsampling for Open3D: its seed only needs to land in the refinement's basin,
        # and at 128x128 it would otherwise cost more than everything else in the pose stage.
        self.down = max(1, min(self.h, self.w) // max(self.s.open3d_max_side, 8))
        self.o3d_hw = (self.h // self.down, self.w // self.down)
        Ks = self.K.copy()
        Ks[:2] /= self.down  # pixel-centre convention keeps K's form under integer resampling
        self.o3d_intrinsic = o3d.camera.PinholeCameraIntrinsic(
            self.o3d_hw[1], self.o3d_hw[0], Ks[0, 0], Ks[1, 1], Ks[0, 2] - 0.5, Ks[1, 2] - 0.5)
        # Sampling stride of the refinement: about refine_pixels per pair whatever the image size.
        self.refine_stride = max(1, int(round(self.h * self.w / self.s.refine_pixels)))
        self.option = o3d.pipelines.odometry.OdometryOption(
            iteration_number_per_pyramid_level=o3d.utility.IntVector(list(self.s.iterations)),
            depth_diff_max=self.s.depth_diff_rel * self.median_depth,
            depth_min=0.0, depth_max=self.s.depth_max_rel * self.median_depth)

    # -- per-frame Open3D inputs, built once ------------------------------------------------------
    def rgbd(self, i: int):
        if i not in self._rgbd:
            import cv2

            color, depth = self.frames[i], self.depth[i]
            if self.down > 1:
                hh, ww = self.o3d_hw
                color = cv2.resize(color[:hh * self.down, :ww * self.down], (ww, hh), interpolation=cv2.INTER_AREA)
                # One depth per block (its centre is half a full-resolution pixel off, well inside the refinement's
                # basin), so no depths mix across edges.
                depth = np.ascontiguousarray(depth[self.down // 2::self.down, self.down // 2::self.down][:hh, :ww])
            o3d = self.o3d
            self._rgbd[i] = o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(color)), o3d.geometry.Image(np.ascontiguousarray(depth)),
                depth_scale=1.0, depth_trunc=float(self.s.depth_max_rel * self.median_depth),
                convert_rgb_to_intensity=True)
        return self._rgbd[i]

    # -- candidates --------------------------------------------------------------------------------
    def odometry(self, src: int, tgt: int, init: np.ndarray) -> np.ndarray:
        o3d = self.o3d
        _, T, _ = o3d.pipelines.odometry.compute_rgbd_odometry(
            self.rgbd(src), self.rgbd(tgt), self.o3d_intrinsic, init,
            o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm(), self.option)
        return np.asarray(T)

    def pnp(self, src: int, tgt: int) -> np.ndarray | None:
        """KLT tracks from the target into the source, target depth -> 3D, solvePnPRansac."""
        import cv2

        g_t = (self.gray[tgt] * 255).astype(np.uint8)
        g_s = (self.gray[src] * 255).astype(np.uint8)
        corners = cv2.goodFeaturesToTrack(g_t, maxCorners=300, qualityLevel=0.005, minDistance=2, blockSize=3)
        if corners is None or len(corners) < self.s.pnp_min_inliers:
            return None
        win = (9, 9)
        p_s, st, _ = cv2.calcOpticalFlowPyrLK(g_t, g_s, corners, None, winSize=win, maxLevel=2)
        p_back, st2, _ = cv2.calcOpticalFlowPyrLK(g_s, g_t, p_s, None, winSize=win, maxLevel=2)
        good = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(p_back - corners, axis=-1)[:, 0] < 0.5)
        c = corners[good, 0]
        ui, vi = np.clip(c[:, 0].astype(int), 0, self.w - 1), np.clip(c[:, 1].astype(int), 0, self.h - 1)
        z = self.depth[tgt][vi, ui]
        keep = z > 0
        if keep.sum() < self.s.pnp_min_inliers:
            return None
        # OpenCV pixel coordinates have centres at integers, ours at +0.5: shift the principal point.
        K_cv = self.K.copy()
        K_cv[0, 2] -= 0.5
        K_cv[1, 2] -= 0.5
        obj = np.stack([(c[keep, 0] - K_cv[0, 2]) / K_cv[0, 0] * z[keep],
                        (c[keep, 1] - K_cv[1, 2]) / K_cv[1, 1] * z[keep], z[keep]], 1)
        img = p_s[good, 0][keep]
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj.astype(np.float64), img.astype(np.float64), K_cv, None, iterationsCount=200,
            reprojectionError=1.0, confidence=0.999, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or inliers is None or len(inliers) < self.s.pnp_min_inliers:
            return None
        T_ts = np.eye(4)  # target camera -> source camera
        T_ts[:3, :3] = cv2.Rodrigues(rvec)[0]
        T_ts[:3, 3] = tvec[:, 0]
        return np.linalg.inv(T_ts)

    def plausible(self, T: np.ndarray) -> bool:
        return (bool(np.isfinite(T).all()) and float(rotation_angle_deg(T[:3, :3])) <= self.s.max_step_rotation_deg
                and float(np.linalg.norm(T[:3, 3])) <= self.s.max_step_translation_rel * self.median_depth)

    # -- the chain ------------------------------------------------------------------------------------
    def run(self) -> PoseResult:
        n = self.num_frames
        pairs = [(i + 1, i) for i in range(n - 1)]  # (src, tgt): motion of camera i+1 in camera i
        ident = np.eye(4)
        id_eval = pair_residuals(self.gray, self.depth, self.K, pairs, np.tile(ident, (len(pairs), 1, 1)))
        tried: list[dict[str, float]] = [{} for _ in pairs]
        cands: list[list[tuple]] = [[] for _ in pairs]  # (residual, overlap, method, T, scale) per pair

        def refine_and_score(keys: list[int], seeds: list[np.ndarray], method: str) -> None:
            if not keys:
                return
            refined, scales = refine_direct(self.gray, self.depth, self.K, [pairs[k] for k in keys], np.array(seeds),
                                            self.s.refine_iterations, stride=self.refine_stride,
                                            estimate_scale=self.s.estimate_scale)
            scores = pair_residuals(self.gray, self.depth, self.K, [pairs[k] for k in keys], refined, scales)
            for k, T, sc, (res, ov) in zip(keys, refined, scales, scores):
                tried[k][method] = round(res, 6)
                if self._passes(T, res, ov, id_eval[k][0]):
                    cands[k].append((res, ov, method, T, float(sc)))

        # 1. Open3D odometry for every pair; the better of it and identity seeds the refinement.
        o3d_seeds, other_seeds = [], []
        T_o3d = np.array([self.odometry(s, t, ident) for s, t in pairs])
        o3d_eval = pair_residuals(self.gray, self.depth, self.K, pairs, T_o3d)
        for k, T_o in enumerate(T_o3d):
            res_o = o3d_eval[k][0] if self.plausible(T_o) else np.inf
            tried[k]["open3d"] = round(float(res_o), 6)
            o3d_seeds.append(T_o if res_o <= id_eval[k][0] else ident)
            other_seeds.append(ident if res_o <= id_eval[k][0] else T_o)
        refine_and_score(list(range(len(pairs))), o3d_seeds, "odometry")

        # 2. Pairs that failed, or whose residual stands out from the clip's typical pair (a wrong
        #    local minimum), try the other seed and feature tracks + PnP; the lowest residual wins.
        best = [min(c, key=lambda x: x[0])[0] if c else np.inf for c in cands]
        finite = [b for b in best if np.isfinite(b)]
        typical = float(np.median(finite)) if finite else np.inf
        retry = [k for k in range(len(pairs)) if best[k] > self.s.outlier_factor * typical]
        alt = [k for k in retry if self.plausible(other_seeds[k])]
        refine_and_score(alt, [other_seeds[k] for k in alt], "odometry")
        pnp = {k: self.pnp(*pairs[k]) for k in retry}
        keys = [k for k in retry if pnp[k] is not None]
        refine_and_score(keys, [pnp[k] for k in keys], "pnp")

        # 3. Chain; a pair nothing explains gets the identity and lowers every later frame's confidence.
        #    With scales, frame i+1's depth is brought to frame i's and so, step by step, to frame 0's:
        #    a step measured in frame i's raw units is S_i times longer in frame 0's.
        c2w = np.tile(np.eye(4), (n, 1, 1))
        confidence = np.ones(n)
        depth_scale = np.ones(n)
        report = []
        for k, (s, t) in enumerate(pairs):
            id_res, id_ov = id_eval[k]
            sc = 1.0
            if cands[k]:
                (res, ov, method, T, sc), ok = min(cands[k], key=lambda x: x[0]), True
            elif id_res <= self.s.max_residual and id_ov >= self.s.min_overlap:
                res, ov, method, T, ok = id_res, id_ov, "identity", ident, True  # nothing moved
            else:
                res, ov, method, T, ok = id_res, id_ov, "identity-fallback", ident, False
            step = T.copy()
            step[:3, 3] *= depth_scale[t]
            c2w[s] = c2w[t] @ step
            depth_scale[s] = depth_scale[t] * sc
            confidence[s] = confidence[t] * (1.0 if ok else 0.2)
            report.append(PairReport(
                pair=(t, s), method=method, ok=ok, residual=round(float(res), 6),
                identity_residual=round(float(id_res), 6), overlap=round(float(ov), 4),
                rotation_deg=round(float(rotation_angle_deg(T[:3, :3])), 4),
                translation=round(float(np.linalg.norm(step[:3, 3])), 6), candidates=tried[k],
                depth_scale=round(float(sc), 6)))
        return PoseResult(c2w=c2w, confidence=confidence, report=report, depth_scale=depth_scale)

    def _passes(self, T: np.ndarray, res: float, overlap: float, id_res: float) -> bool:
        # A motion must explain the pair in absolute terms, at least as well as standing still,
        # and be a step a video camera can take between two frames.
        return (np.all(np.isfinite(T)) and res <= self.s.max_residual and res <= id_res + 1e-6
                and overlap >= self.s.min_overlap and self.plausible(T))


def estimate_poses(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, confidence: np.ndarray | None = None,
                   settings: OdometrySettings | None = None) -> PoseResult:
    """Camera-to-world poses (F, 4, 4) relative to frame 0 from frames and depth.

    Pixels with confidence < 0.5 are ignored (their depth is treated as missing).
    """
    depth = np.asarray(depth, np.float32)
    if confidence is not None:
        depth = np.where(confidence >= 0.5, depth, 0.0).astype(np.float32)
    with open3d_single_thread():
        return PoseEstimator(frames, depth, K, settings).run()
