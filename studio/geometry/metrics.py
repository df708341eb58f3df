"""3D-consistency metrics of a clip: depth consistency, re-render quality, camera path vs prompt.

Conventions: depth (F, H, W) with 0 = nothing; c2w (F, 4, 4) OpenCV axes; frames uint8.
The trajectory comparison is what World-R1's S_traj (world-r1-method.md section 3; the score
itself is studio.rewards.trajectory_score) is computed from; choices the method leaves open are
stated where they are made.
"""

from __future__ import annotations

import numpy as np

from studio.geometry.fusion import fusion_mask, render_points, splat
from studio.geometry.projection import backproject, project, relative_to_first, rotation_angle_deg, torch_threads

# -------------------------------------------------------------------------------------------------
# Degenerate clips: nothing to measure 3D consistency from
# -------------------------------------------------------------------------------------------------

# Grey levels (0-255). A blank frame's re-render is exact whatever the geometry (PSNR 60 dB, SSIM 1),
# and so is a frozen clip's (every view is the same view), which would hand a reward policy a
# perfect score for no video at all. Measured on TinyWorld renders (64 and 128 px, every camera
# move, 17 and 33 frames): texture >= 42, correlation >= 0.94, change from the first frame far
# above 10; a repeated frame with +-10 uniform noise per pixel changes by 1.2, pure noise
# correlates at 0.01.
MIN_TEXTURE = 2.0         # median spread of a frame's grey levels (frames area-scaled to 32 px)
MIN_CORRELATION = 0.3     # median correlation of neighbouring pixels (noise has none)
MIN_CHANGE = 1.5          # largest mean change of a frame from the first (frames area-scaled to 16 px)


def _grey_small(frames: np.ndarray, side: int) -> np.ndarray:
    import cv2

    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = grey.shape[1:]
    s = min(1.0, side / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.stack([cv2.resize(g, size, interpolation=cv2.INTER_AREA) for g in grey])


def degenerate_reason(frames: np.ndarray) -> str | None:
    """Why a clip has no 3D consistency to measure ("blank: ...", "noise: ...", "frozen: ..."), or None.

    blank: no texture; noise: no spatial structure; frozen: nothing changes from frame to frame
    (a still image, or one with per-pixel noise). Measured on the frames alone, so it is the same
    whatever depth estimator the analysis uses. The first word is the kind.
    """
    texture = float(np.median(_grey_small(frames, 32).std(axis=(1, 2))))
    if texture < MIN_TEXTURE:
        return (f"blank: the frames have no texture (grey levels spread by {texture:.1f} of 255), "
                "so there is no geometry to measure")
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    corr = float(np.median([(_correlation(g[:, :-1], g[:, 1:]) + _correlation(g[:-1], g[1:])) / 2 for g in grey]))
    if corr < MIN_CORRELATION:
        return (f"noise: neighbouring pixels are unrelated (correlation {corr:.2f}), "
                "so there is no surface to reconstruct")
    small = _grey_small(frames, 16)
    change = float(np.abs(small - small[:1]).mean(axis=(1, 2)).max())
    if change < MIN_CHANGE:
        return (f"frozen: no frame differs from the first by more than {change:.2f} grey levels on average, "
                "so there is no camera or scene motion to measure 3D consistency from")
    return None


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-9 else 1.0


# -------------------------------------------------------------------------------------------------
# Depth consistency
# -------------------------------------------------------------------------------------------------

PAIR_STRIDES = (1, 2, 4, 8)  # adjacent pairs alone hide drift; longer strides see the chained path


def depth_consistency_l1(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray, confidence: np.ndarray | None = None,
                         strides: tuple[int, ...] = PAIR_STRIDES, visibility_tolerance: float = 0.03) -> float:
    """Depth of frame i warped into frame j with the estimated poses vs frame j's depth.

    Relative L1 |z_warped - d_j| / d_j (capped at 1 so one disocclusion cannot dominate) over
    co-visible pixels: the warped point lands on a pixel of j with depth and is the nearest warped
    surface there (a z-buffer within `visibility_tolerance`). d_j is sampled bilinearly when all
    four neighbours are valid, else at the nearest pixel. Mean over pairs (i, i+s), s in strides.
    """
    f_n, h, w = depth.shape
    mask = fusion_mask(depth, confidence)
    pts = backproject(depth.astype(np.float64), K)
    errors = []
    for s in strides:
        for i in range(f_n - s):
            j = i + s
            T = np.linalg.inv(c2w[j]) @ c2w[i]
            X = pts[i][mask[i]] @ T[:3, :3].T + T[:3, 3]
            u, v, z = project(X, K)
            ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
            inb = (z > 1e-6) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
            if inb.sum() < 16:
                continue
            u, v, z, ui, vi = u[inb], v[inb], z[inb], ui[inb], vi[inb]
            key = vi * w + ui
            zbuf = np.full(h * w, np.inf)
            np.minimum.at(zbuf, key, z)
            vis = (z <= zbuf[key] * (1 + visibility_tolerance)) & mask[j].reshape(-1)[key]
            if vis.sum() < 16:
                continue
            d_j = _sample_depth(depth[j], u[vis], v[vis], ui[vis], vi[vis])
            errors.append(float(np.minimum(np.abs(z[vis] - d_j) / d_j, 1.0).mean()))
    return float(np.mean(errors)) if errors else float("nan")


def _sample_depth(d: np.ndarray, u: np.ndarray, v: np.ndarray, ui: np.ndarray, vi: np.ndarray) -> np.ndarray:
    h, w = d.shape
    u0 = np.clip(np.floor(u).astype(np.int64), 0, w - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, h - 2)
    a, b = np.clip(u - u0, 0, 1), np.clip(v - v0, 0, 1)
    c = d[v0, u0], d[v0, u0 + 1], d[v0 + 1, u0], d[v0 + 1, u0 + 1]
    bil = (1 - a) * (1 - b) * c[0] + a * (1 - b) * c[1] + (1 - a) * b * c[2] + a * b * c[3]
    smooth = (np.min(c, axis=0) > 0) & (np.max(c, axis=0) <= 1.1 * np.min(c, axis=0))
    return np.where(smooth, bil, d[vi, ui])


# -------------------------------------------------------------------------------------------------
# Re-render quality at the input cameras
# -------------------------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB of images in [0, 1] over masked pixels (capped at 60 dB for exact matches)."""
    mse = float(((a - b) ** 2)[mask].mean()) if mask.any() else float("nan")
    return float(min(60.0, 10 * np.log10(1.0 / max(mse, 1e-6))))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Gaussian-window SSIM (Wang et al. 2004) of images in [0, 1], channel mean, averaged over mask."""
    import cv2

    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (7, 7), sigma, borderType=cv2.BORDER_REFLECT)

    a, b = a.astype(np.float32), b.astype(np.float32)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean(-1)[mask].mean()) if mask.any() else float("nan")


def render_reconstruction(points: np.ndarray, colors: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                          height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-render the fused cloud at every input camera: images (F, H, W, 3) and coverage (F, H, W)."""
    images, _, covered = render_points(points, colors, K, c2w, height, width)
    return images, covered


LEAVE_ONE_OUT_OFFSETS = (1, 2, 4, 8)  # the frames each input camera is rendered from: near ones and far ones
RENDER_CHUNK_POINTS = 2_000_000        # source points splatted at once (~25 arrays of this length)


def leave_one_out_pairs(num_frames: int, offsets: tuple[int, ...] = LEAVE_ONE_OUT_OFFSETS) -> list[tuple[int, int]]:
    """(target, source) frame pairs: every frame is rendered from frames at +-offsets, never from itself."""
    return [(t, t + d) for t in range(num_frames) for o in offsets for d in (-o, o) if 0 <= t + d < num_frames]


def render_leave_one_out(frames: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                         confidence: np.ndarray | None = None, offsets: tuple[int, ...] = LEAVE_ONE_OUT_OFFSETS,
                         sigma_px: float = 0.3, depth_tolerance: float = 0.03,
                         fill_holes: int = 2, max_points: int = RENDER_CHUNK_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Render every input camera from the reconstruction's points of the OTHER frames.

    The reconstruction is each frame's pixels lifted with its depth and placed with its pose,
    kept at native resolution with their own colours (no voxel averaging, which blurs a
    64x64 texture to ~23 dB on a perfect clip). Leaving the frame out is what makes the render
    test consistency: a frame cannot explain itself, so an object that moves, a frame that
    wobbles or a pose that is wrong shows up as ghosts and misregistration. Small Gaussian
    splats (sigma_px) keep the render sharp where many points land. Returns images (F, H, W, 3)
    float32 in [0, 1] and coverage (F, H, W) bool.

    Target cameras are rendered in chunks of about `max_points` source points: each target's
    render depends only on its own sources, so the result is the same, and memory stays bounded
    (all 129 frames of an upload at once took 2 GB).
    """
    f_n, h, w = depth.shape
    pairs = np.array(leave_one_out_pairs(f_n, offsets)).reshape(-1, 2)
    mask = fusion_mask(depth, confidence).reshape(f_n, -1)
    images = np.zeros((f_n, h, w, 3), np.float32)
    covered = np.zeros((f_n, h, w), bool)
    if len(pairs) == 0:
        return images, covered
    rays = backproject(np.ones((h, w)), K).reshape(1, -1, 3).astype(np.float32)
    pts = rays * depth.reshape(f_n, -1, 1).astype(np.float32)                      # (F, HW, 3) camera points
    colors = frames.reshape(f_n, -1, 3)
    w2c = np.linalg.inv(c2w)
    targets_per_chunk = max(1, max_points // (2 * len(offsets) * h * w))
    for t0 in range(0, f_n, targets_per_chunk):
        n_views = min(targets_per_chunk, f_n - t0)
        chunk = pairs[(pairs[:, 0] >= t0) & (pairs[:, 0] < t0 + n_views)]
        tgt, src = chunk[:, 0], chunk[:, 1]
        T = (w2c[tgt] @ c2w[src]).astype(np.float32)                                 # source camera -> target camera
        live = mask[src]                                                             # (P, HW)
        cam = (pts[src] @ np.swapaxes(T[:, :3, :3], 1, 2) + T[:, None, :3, 3])[live]
        cols = colors[src][live].astype(np.float32) / 255.0
        view = np.broadcast_to((tgt - t0)[:, None], live.shape)[live]
        imgs, _, cov = splat(cam, cols, view, n_views, K, h, w, depth_tolerance, fill_holes, sigma_px)
        images[t0:t0 + n_views], covered[t0:t0 + n_views] = imgs, cov
    return images, covered


def recon_scores(frames: np.ndarray, renders: np.ndarray, covered: np.ndarray, depth: np.ndarray,
                 confidence: np.ndarray | None = None) -> dict[str, float]:
    """recon_psnr / recon_ssim (mean over frames) on the pixels the reconstruction is built from.

    renders: the input cameras rendered from the other frames (render_leave_one_out).

    Judged pixels: those that entered the fusion (valid, not far) and are covered by the render;
    recon_coverage reports the covered share. Outside them the render takes the frame's own value,
    so SSIM windows at the mask edge compare like with like.
    """
    target = frames.astype(np.float32) / 255.0
    judged = fusion_mask(depth, confidence)
    m = judged & covered
    p, s = [], []
    for i in range(len(frames)):
        if m[i].sum() < 16:
            continue
        r = np.where(m[i][..., None], renders[i], target[i])
        p.append(psnr(r, target[i], m[i]))
        s.append(ssim(r, target[i], m[i]))
    cov = float(m.sum() / max(judged.sum(), 1))
    return {"recon_psnr": float(np.mean(p)) if p else float("nan"),
            "recon_ssim": float(np.mean(s)) if s else float("nan"),
            "recon_coverage": cov}


# -------------------------------------------------------------------------------------------------
# Camera path against the prompt
# -------------------------------------------------------------------------------------------------

def umeyama_sim3(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ s R src + t (Umeyama 1991); closed form, deterministic."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum() / len(src)
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 1e-18 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def target_trajectory(prompt: str | None, num_frames: int) -> np.ndarray | None:
    """The camera path the prompt asks for (relative to the first camera, focus = 1); None if no clause."""
    if not prompt:
        return None
    from studio.camera import camera_trajectory, parse_camera_motion

    moves = parse_camera_motion(prompt)
    return camera_trajectory(moves, num_frames) if moves else None


def _path_length(c: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())


def _rotation_length_deg(R: np.ndarray) -> float:
    """Total turning along the path: sum of per-step rotation angles."""
    steps = np.swapaxes(R[:-1], 1, 2) @ R[1:]
    return float(rotation_angle_deg(steps).sum())


def compare_trajectories(pred_c2w: np.ndarray, target_c2w: np.ndarray, unit_length: float = 1.0) -> dict:
    """Everything trajectory_error_deg and S_traj (studio.rewards.trajectory_score) need, after
    re-expressing both paths to their first pose.

    Predicted centres are scaled by the Umeyama Sim(3) scale to the target. Only the scale is
    applied: both paths already share their first pose, and applying the Sim(3) rotation too would
    turn any straight path onto any other and hide a wrong direction of travel. When the target
    does not translate there is nothing to scale to; the predicted centres are then divided by
    `unit_length` (the scene's focus distance) so they are in the target's units.
    """
    pred = relative_to_first(np.asarray(pred_c2w, np.float64))
    tgt = relative_to_first(np.asarray(target_c2w, np.float64))
    n = len(tgt)
    c_p, c_t = pred[:, :3, 3], tgt[:, :3, 3]
    L_t = _path_length(c_t)
    translates = L_t > 1e-6
    if translates:
        scale = umeyama_sim3(c_p, c_t)[0] if np.abs(c_p).max() > 1e-12 else 0.0
    else:
        scale = 1.0 / unit_length
    c_p = c_p * scale
    rot_err = rotation_angle_deg(np.swapaxes(pred[:, :3, :3], 1, 2) @ tgt[:, :3, :3])
    # Direction of travel per frame, weighted by how far the target has moved (early frames
    # have tiny, noisy displacements); 90 degrees where the prediction did not move at all.
    dn_t, dn_p = np.linalg.norm(c_t, axis=1), np.linalg.norm(c_p, axis=1)
    dir_err = None
    if translates:
        cosang = (c_p * c_t).sum(1) / np.maximum(dn_p * dn_t, 1e-18)
        ang = np.where(dn_p > 1e-9 * max(dn_t.max(), 1e-12), np.degrees(np.arccos(np.clip(cosang, -1, 1))), 90.0)
        dir_err = float((ang * dn_t).sum() / dn_t.sum())
    return {
        "num_frames": n,
        "scale": float(scale),
        "translates": bool(translates),
        "rotates": _rotation_length_deg(tgt[:, :3, :3]) > 1e-3,
        "path_length_pred": _path_length(c_p),
        "path_length_target": L_t,
        "rotation_pred_deg": _rotation_length_deg(pred[:, :3, :3]),
        "rotation_target_deg": _rotation_length_deg(tgt[:, :3, :3]),
        "mean_rotation_error_deg": float(rot_err[1:].mean()) if n > 1 else 0.0,
        "last_rotation_error_deg": float(rot_err[-1]),
        "translation_direction_error_deg": dir_err,
        "mean_centre_error": float(np.linalg.norm(c_p - c_t, axis=1).mean()),
        "centres_pred": c_p,
        "centres_target": c_t,
    }


def trajectory_error_deg(cmp: dict) -> float:
    """Mean per-frame rotation error + translation-direction error (when the target translates).

    Summed so that a wrong move of either kind shows: a push read as a pull has no rotation error.
    """
    return cmp["mean_rotation_error_deg"] + (cmp["translation_direction_error_deg"] or 0.0)


def move_segments(num_moves: int, num_frames: int) -> list[tuple[int, int]]:
    """(first, last) frame spanning each move's share of the clip, as camera_trajectory lays them out.

    Move k runs over u = f / (F - 1) in [k / n, (k + 1) / n]; the span is widened to whole frames,
    so neighbouring spans share the frame at (or just past) their boundary.
    """
    if num_moves < 1 or num_frames < 2:
        raise ValueError(f"need at least 1 move and 2 frames, got {num_moves} and {num_frames}")
    last = num_frames - 1
    return [(int(np.floor(k * last / num_moves + 1e-9)), int(np.ceil((k + 1) * last / num_moves - 1e-9)))
            for k in range(num_moves)]


def move_trajectory_errors(pred_c2w: np.ndarray, prompt: str | None, unit_length: float = 1.0) -> list[float] | None:
    """trajectory_error_deg of each move of the prompt's camera clause, on its own share of the frames.

    Why: the whole-clip error of "orbit left, then push in" does not say which move the clip
    missed; each segment is re-expressed to its own first pose and compared on its own.
    """
    from studio.camera import parse_camera_motion

    moves = parse_camera_motion(prompt) if prompt else None
    if not moves:
        return None
    pred = np.asarray(pred_c2w, np.float64)
    target = target_trajectory(prompt, len(pred))
    errors = []
    for a, b in move_segments(len(moves), len(pred)):
        if b - a < 1:
            errors.append(float("nan"))
            continue
        errors.append(trajectory_error_deg(compare_trajectories(pred[a:b + 1], target[a:b + 1], unit_length)))
    return errors


# Scales of the smoothness score: a jerk of either size alone divides the score by e. Measured on
# TinyWorld (validate_geometry.py, 64x64): intact clips score ~0.95 with ground-truth depth and a
# median 0.75 with the learned depth; per-frame shake and shuffled frames score 0.00.
JERK_ROT_DEG = 2.0      # third difference of the camera rotation, degrees per frame^3
JERK_REL = 0.03         # third difference of the camera centre, in units of the scene's depth per frame^3


def _rotation_vectors_deg(R: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) in degrees of rotation matrices (..., 3, 3)."""
    angle = np.radians(rotation_angle_deg(R))
    axis = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(angle)[..., None]
    # angle / (2 sin angle) -> 1/2 for small angles; steps between video frames are far from 180 deg.
    return np.degrees(axis * np.where(np.abs(sin) > 1e-9, angle[..., None] / (2 * np.where(sin == 0, 1, sin)), 0.5))


def trajectory_smoothness(c2w: np.ndarray, unit_length: float = 1.0) -> dict:
    """How smooth the camera path is: jerk (third difference) of centres and of rotation.

    A real camera, and every move the prompt language has, changes velocity slowly; per-frame
    shake or frames out of order make the path jump back and forth. Rotation: per-step rotation
    vectors (world frame, degrees) are the angular velocity, their second difference the jerk.
    Centres are divided by `unit_length` (the scene's median depth) so the number has no scale.
    Medians over the path: the one change of velocity where a composed move switches ("move left,
    then tilt up") does not count, while shake and frames out of order jerk at nearly every frame.
    Returns trajectory_jerk_deg, trajectory_jerk_rel (medians over the path) and
    trajectory_smoothness = exp(-(jerk_deg / JERK_ROT_DEG + jerk_rel / JERK_REL)) in (0, 1].
    Needs 4 frames; fewer give None.
    """
    c2w = relative_to_first(np.asarray(c2w, np.float64))
    if len(c2w) < 4:
        return {"trajectory_jerk_deg": None, "trajectory_jerk_rel": None, "trajectory_smoothness": None}
    R = c2w[:, :3, :3]
    omega = _rotation_vectors_deg(R[1:] @ np.swapaxes(R[:-1], 1, 2))      # (F-1, 3), world frame
    jerk_deg = float(np.median(np.linalg.norm(np.diff(omega, n=2, axis=0), axis=1)))
    jerk_rel = float(np.median(np.linalg.norm(np.diff(c2w[:, :3, 3] / unit_length, n=3, axis=0), axis=1)))
    return {"trajectory_jerk_deg": jerk_deg, "trajectory_jerk_rel": jerk_rel,
            "trajectory_smoothness": float(np.exp(-(jerk_deg / JERK_ROT_DEG + jerk_rel / JERK_REL)))}


# -------------------------------------------------------------------------------------------------
# Text alignment
# -------------------------------------------------------------------------------------------------

_SCORERS: dict[str, object] = {}


def clip_score(frames: np.ndarray, prompt: str, scorer: str = "tinyworld") -> float:
    """Mean text-frame cosine similarity from studio.scoring (loaded once per process)."""
    if scorer not in _SCORERS:
        from studio.scoring import load_scorer

        _SCORERS[scorer] = load_scorer(scorer)
    with torch_threads(1):  # see torch_threads: one thread is many times faster on shared cores
        return float(_SCORERS[scorer].score(frames, prompt))
