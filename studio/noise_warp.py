"""Camera-aware latent initialization: World-R1's noise warping (method doc §5).

The chain, for one prompt with a camera clause:

    camera clause -> moves -> trajectory c2w (F, 4, 4)              (studio.camera)
    -> poses of the latent frames (video frames 0, r, 2r, ... ; r = temporal compression)
    -> flow between consecutive latent frames on a fine grid (latent grid x ``upscale``),
       every pixel a point on a fronto-parallel plane at the focus depth      (`plane_flow`)
    -> Go-with-the-Flow noise warping, frame by frame: a pixel stretched over k target
       pixels is split into k independent N(0, 1) parts that sum back to it, pixels squeezed
       onto one target are summed and renormalised                           (`warp_noise_frame`)
    -> variance-preserving binning to the latent grid (sum of upscale² values / upscale)
    -> degradation blend with independent fresh noise, alpha = 0.35          (`blend_noise`)
    -> stepwise delta: delta = warped - fresh, 9×9 box low-pass per frame, normalised;
       after each of the first 8 denoising steps x += w·c_k·std(x)·delta, c = linspace(1, .1, 8)/4.4,
       then the per-sample mean and std of x are restored                    (`lowpass_delta`, `inject`)

The split/sum warp is exact: every warped value is a normalised sum of independent N(0, 1)
parts that no other pixel uses, so warped noise is N(0, 1) and independent within a frame
(re-Gaussianized by construction), while consecutive frames are correlated along the flow.
The first fine frame is drawn conditioned on the plain latent noise (it bins back to it
exactly), so before the blend the warped clip starts from the seed's own noise.

Shapes: a single clip's latent noise is (C, T, h, w); batched tensors are (B, C, T, h, w).
Poses are camera-to-world 4×4, OpenCV axes (+x right, +y down, +z forward).
Without a camera clause there is no delta: generation starts from, and stays, plain noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "WarpConfig",
    "plane_flow",
    "warp_noise_frame",
    "upsample_noise",
    "bin_noise",
    "warped_noise",
    "blend_noise",
    "lowpass_delta",
    "injection_weights",
    "camera_delta",
    "inject",
]


@dataclass
class WarpConfig:
    """Constants of the camera-aware initialization (World-R1 defaults for Wan2.1-1.3B)."""

    wrap_strength: float = 0.35  # w: 0.35 for 1.3B, 0.40 for 14B
    degradation: float = 0.35  # alpha of the blend with fresh noise
    box: int = 9  # low-pass box size (latent pixels) for the delta
    inject_steps: int = 8  # the delta is added after each of the first N steps
    c_first: float = 1.0  # c = linspace(c_first, c_last, N) / sum
    c_last: float = 0.1
    upscale: int = 4  # noise is warped on the latent grid × upscale, then binned
    fov_deg: float = 60.0  # horizontal field of view used to turn poses into flow
    focus: float = 1.0  # depth of the fronto-parallel plane (the trajectory's focus)
    max_flow: float = 0.5  # cap on a step's flow, as a fraction of the shorter side


def intrinsics(height: int, width: int, fov_deg: float) -> np.ndarray:
    """Pinhole K (3, 3) for a horizontal field of view; pixel centres at integer + 0.5."""
    f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def plane_flow(
    c2w_src: np.ndarray,
    c2w_dst: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
    depth: float,
    max_flow_px: float | None = None,
) -> np.ndarray:
    """Flow (2, H, W) in pixels, (dx, dy), that carries pixel centres of the src camera to the dst camera.

    Every src pixel is a point on the fronto-parallel plane z = ``depth`` of the src camera;
    it is moved by the relative pose and re-projected. Points that end behind the dst camera
    get NaN. The largest flow is capped at ``max_flow_px`` (direction kept).
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    points_src = rays * (depth / rays[2])
    rel = np.linalg.inv(c2w_dst) @ c2w_src  # src camera -> dst camera
    points_dst = rel[:3, :3] @ points_src + rel[:3, 3:4]
    z = points_dst[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = K @ (points_dst / z)
    flow = np.stack([proj[0] - u.ravel(), proj[1] - v.ravel()])
    flow[:, z <= 1e-6 * depth] = np.nan
    if max_flow_px is not None:
        mag = np.hypot(flow[0], flow[1])
        scale = np.where(mag > max_flow_px, max_flow_px / np.maximum(mag, 1e-12), 1.0)
        flow = flow * scale
    return flow.reshape(2, height, width)


def _split_parts(values: np.ndarray, owner: np.ndarray, n_owner: int, rng: np.random.Generator) -> np.ndarray:
    """Split each owner's value over the k targets that share it into k independent N(0, 1) parts.

    values: (C, n_owner) iid N(0, 1); owner: (N,) owner index of every target.
    part_i = X/√k + e_i − mean(e) has variance 1, zero covariance between siblings, and the
    siblings sum to √k·X, so nothing of X is lost.
    """
    counts = np.bincount(owner, minlength=n_owner).astype(np.float64)
    eps = rng.standard_normal((values.shape[0], owner.size))
    eps_mean = _channel_bincount(owner, eps, n_owner) / np.maximum(counts, 1)
    return values[:, owner] / np.sqrt(counts[owner]) + eps - eps_mean[:, owner]


def _channel_bincount(index: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Per-channel bincount of weights (C, N) at index (N,) -> (C, n), in one call."""
    c = weights.shape[0]
    flat = (index[None, :] + n * np.arange(c)[:, None]).ravel()
    return np.bincount(flat, weights=weights.ravel(), minlength=c * n).reshape(c, n)


def warp_noise_frame(noise: np.ndarray, flow: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Warp one frame of N(0, 1) noise (C, H, W) along ``flow`` (2, H, W), src -> dst.

    Expansion (one src pixel seen by k dst pixels) splits it; contraction (src pixels that no
    dst pixel looks at, landing on the same dst pixel) sums them into that pixel, renormalised.
    dst pixels with no source inside the frame get fresh noise.
    """
    c, h, w = noise.shape
    n = h * w
    flat = noise.reshape(c, n)
    v, u = np.mgrid[0:h, 0:w]
    fx, fy = np.nan_to_num(flow[0], nan=1e9), np.nan_to_num(flow[1], nan=1e9)

    # Backward lookup: where each dst pixel came from. The forward flow at the dst pixel is a
    # good estimate of the inverse flow for the smooth fields a camera move produces.
    src_u = np.rint(u - fx).astype(np.int64)
    src_v = np.rint(v - fy).astype(np.int64)
    has_src = (src_u >= 0) & (src_u < w) & (src_v >= 0) & (src_v < h)
    src = (src_v * w + src_u).ravel()
    has_src = has_src.ravel()

    out = rng.standard_normal((c, n))  # dst pixels with no source: fresh noise
    dst_with_src = np.flatnonzero(has_src)
    parts = _split_parts(flat, src[has_src], n, rng)

    # Contraction: src pixels nobody looked at are summed into the dst pixel they land on.
    used = np.zeros(n, dtype=bool)
    used[src[has_src]] = True
    fwd_u = np.rint(u + fx).astype(np.int64).ravel()
    fwd_v = np.rint(v + fy).astype(np.int64).ravel()
    lands = (~used) & (fwd_u >= 0) & (fwd_u < w) & (fwd_v >= 0) & (fwd_v < h)
    landing = fwd_v[lands] * w + fwd_u[lands]
    extra_count = np.bincount(landing, minlength=n).astype(np.float64)
    extra_sum = _channel_bincount(landing, flat[:, lands], n)
    # A landing pixel without a source of its own keeps its fresh draw as one of the parts.
    base = out.copy()
    base[:, dst_with_src] = parts
    out = (base + extra_sum) / np.sqrt(1.0 + extra_count)
    return out.reshape(c, h, w)


def upsample_noise(latent_noise: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
    """Fine N(0, 1) noise (C, h·f, w·f) that bins back exactly to ``latent_noise`` (C, h, w)."""
    c, h, w = latent_noise.shape
    owner = (np.arange(h * factor)[:, None] // factor * w + np.arange(w * factor)[None, :] // factor).ravel()
    # The split gives each fine pixel X/f + (e − mean e): f² siblings sum to f·X, binned back /f = X.
    fine = _split_parts(latent_noise.reshape(c, -1), owner, h * w, rng)
    return fine.reshape(c, h * factor, w * factor)


def bin_noise(fine: np.ndarray, factor: int) -> np.ndarray:
    """Variance-preserving binning (..., H, W) -> (..., H/f, W/f): block sums divided by f."""
    *lead, hh, ww = fine.shape
    blocks = fine.reshape(*lead, hh // factor, factor, ww // factor, factor)
    return blocks.sum(axis=(-3, -1)) / factor


def latent_frame_poses(c2w: np.ndarray, num_latent_frames: int, temporal_factor: int) -> np.ndarray:
    """Poses of the latent frames: video frames 0, r, 2r, ... (clamped to the last frame)."""
    idx = np.minimum(np.arange(num_latent_frames) * temporal_factor, len(c2w) - 1)
    return c2w[idx]


def warped_noise(
    fresh: np.ndarray,
    c2w: np.ndarray,
    rng: np.random.Generator,
    temporal_factor: int = 4,
    config: WarpConfig = WarpConfig(),
) -> np.ndarray:
    """Camera-warped noise (C, T, h, w) for one clip, before the degradation blend.

    fresh: the plain latent noise (C, T, h, w) of the seed; c2w: (F, 4, 4) video-frame poses.
    """
    c, t, h, w = fresh.shape
    s = config.upscale
    poses = latent_frame_poses(np.asarray(c2w, dtype=np.float64), t, temporal_factor)
    K = intrinsics(h * s, w * s, config.fov_deg)
    cap = config.max_flow * min(h, w) * s
    out = np.empty_like(fresh, dtype=np.float64)
    fine = upsample_noise(fresh[:, 0].astype(np.float64), s, rng)
    out[:, 0] = bin_noise(fine, s)
    for k in range(1, t):
        flow = plane_flow(poses[k - 1], poses[k], K, h * s, w * s, config.focus, cap)
        fine = warp_noise_frame(fine, flow, rng)
        out[:, k] = bin_noise(fine, s)
    return out


def blend_noise(warped, fresh, alpha: float):
    """Variance-preserving blend: (alpha·fresh + (1 − alpha)·warped) / sqrt(alpha² + (1 − alpha)²)."""
    return (alpha * fresh + (1 - alpha) * warped) / np.sqrt(alpha**2 + (1 - alpha) ** 2)


def lowpass_delta(delta, box: int):
    """Box low-pass (box × box, zero padding) of a (B, C, T, h, w) tensor, per frame and channel."""
    import torch
    import torch.nn.functional as F

    if box <= 1:
        return delta
    b, c, t, h, w = delta.shape
    x = delta.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    x = F.avg_pool2d(x, kernel_size=box, stride=1, padding=box // 2, count_include_pad=True)
    return x.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


def injection_weights(config: WarpConfig = WarpConfig()) -> np.ndarray:
    """c_k = linspace(c_first, c_last, N) / sum (= linspace(1, 0.1, 8) / 4.4 by default)."""
    c = np.linspace(config.c_first, config.c_last, config.inject_steps)
    return c / c.sum()


def camera_delta(
    fresh,
    trajectories: list[np.ndarray | None],
    seeds: list[int],
    temporal_factor: int = 4,
    config: WarpConfig = WarpConfig(),
):
    """Normalised, low-passed delta (B, C, T, h, w) = lowpass(blend(warped) − fresh) / std.

    fresh: plain latent noise (B, C, T, h, w) torch tensor; trajectories: per sample c2w
    (F, 4, 4), or None for prompts without a camera clause (their delta is zero).
    The warp's own randomness is seeded from the sample's seed, so it is reproducible.
    """
    import torch

    delta = torch.zeros_like(fresh)
    for i, (c2w, seed) in enumerate(zip(trajectories, seeds)):
        if c2w is None:
            continue
        rng = np.random.default_rng([int(seed), 0x5EED])
        base = fresh[i].detach().cpu().double().numpy()
        warped = warped_noise(base, c2w, rng, temporal_factor, config)
        blended = blend_noise(warped, rng.standard_normal(warped.shape), config.degradation)
        d = torch.from_numpy(blended - base).to(fresh)
        d = lowpass_delta(d[None], config.box)[0]
        delta[i] = d / (d.std() + 1e-6)
    return delta


def inject(latents, delta, step: int, config: WarpConfig = WarpConfig()):
    """After denoising step ``step`` (0-based): x += w·c_k·std(x)·delta, then restore mean and std.

    Samples whose delta is zero (no camera clause) are returned unchanged; so is everything
    after the first ``inject_steps`` steps.
    """
    import torch

    if step >= config.inject_steps or config.wrap_strength <= 0:
        return latents
    c_k = float(injection_weights(config)[step])
    dims = tuple(range(1, latents.ndim))
    mean = latents.mean(dim=dims, keepdim=True)
    std = latents.std(dim=dims, keepdim=True)
    guided = latents + config.wrap_strength * c_k * std * delta
    g_mean = guided.mean(dim=dims, keepdim=True)
    g_std = guided.std(dim=dims, keepdim=True)
    guided = (guided - g_mean) / (g_std + 1e-6) * std + mean
    active = delta.flatten(1).abs().amax(dim=1) > 0
    return torch.where(active.view(-1, *([1] * (latents.ndim - 1))), guided, latents)
