"""World-R1 rewards as plain callables `(prompts, clips, **context) -> list[float]` (method §3).

R_3D = S_recon + S_meta + S_traj (each in [0, 1]) from `studio.geometry.analyze`; R_gen from the
CLIP-style scorer. The total is w_3d·R_3D + w_gen·R_gen, with R_3D switched off per item
(`use_3d[i] = False` for dynamic prompts). Clips are uint8 (F, H, W, 3) arrays.

The geometry analysis is the expensive part and feeds three components, so `RewardSet` runs it
once per clip and hands the results to every function as `analyses=`; each function still works
alone (it analyses the clips itself when `analyses` is missing). The geometry layer measures
(errors, the trajectory comparison); the scores are computed here. The trainer's parts (reward
pool, the configured set) are in training/rewards.py.
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

RewardFn = Callable[..., list]

# S_recon maps re-render PSNR linearly onto [0, 1] between these (dB); SSIM enters as is.
PSNR_FLOOR_DB = 10.0
PSNR_CEIL_DB = 35.0
# S_meta's camera moves this many times as far from the first camera as the farthest input camera.
NOVEL_VIEW_PUSH = 1.0  # the most displaced input camera; >1 renders beyond it (mostly holes at 64 px)


def as_frames(clip: Any) -> np.ndarray:
    """A clip (array, tensor or object with .frames) as uint8 (F, H, W, 3)."""
    frames = getattr(clip, "frames", clip)
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"a clip must be (F, H, W, 3), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"clip frames must be uint8, got {frames.dtype}")
    return frames


def _flags(use_3d: Sequence[bool] | None, n: int) -> list[bool]:
    if use_3d is None:
        return [True] * n
    flags = [bool(u) for u in use_3d]
    if len(flags) != n:
        raise ValueError(f"use_3d has {len(flags)} entries for {n} clips")
    return flags


_scorer_lock = threading.Lock()
_scorers: dict[str, Any] = {}


def get_scorer(name: str):
    with _scorer_lock:
        if name not in _scorers:
            from studio.scoring import load_scorer

            _scorers[name] = load_scorer(name)
        return _scorers[name]


@dataclass
class FailedAnalysis:
    """Stands in for an Analysis when the geometry engine could not reconstruct a clip (e.g. no
    valid depth): every 3D component scores its worst, R_gen falls back to the scorer."""

    reason: str
    metrics: dict = field(default_factory=dict)


def analyze_clips(prompts: Sequence[str], clips: Sequence[Any], use_3d=None, estimator: str = "", scorer: str | None = None,
                  targets: Sequence[np.ndarray | None] | None = None) -> list:
    """studio.geometry.analyze for each clip whose R_3D is on; None for the others.

    targets: each clip's target camera path (the pipeline's camera_paths); without them the
    prompts' camera clauses are parsed again.
    """
    from studio.geometry import analyze

    kwargs: dict = {"clip_scorer": scorer}
    if estimator:
        kwargs["estimator"] = estimator
    if targets is None:
        targets = [None] * len(clips)
    if len(targets) != len(clips):
        raise ValueError(f"{len(targets)} target paths for {len(clips)} clips")
    out = []
    for p, c, on, target in zip(prompts, clips, _flags(use_3d, len(clips)), targets):
        if not on:
            out.append(None)
            continue
        try:
            out.append(analyze(as_frames(c), p, target_c2w=target, **kwargs))
        except ValueError as e:  # a clip too broken to reconstruct is a bad sample, not a crash
            out.append(FailedAnalysis(str(e)))
        except (ArithmeticError, IndexError, RuntimeError, np.linalg.LinAlgError) as e:
            # A numerical failure deep in the estimator must not end a long run: the clip scores as
            # unreconstructable and the failure is said on stderr so that it gets fixed.
            print(f"warning: geometry analysis failed on {p[:60]!r}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            out.append(FailedAnalysis(f"{type(e).__name__}: {e}"))
    return out


def _analyses(prompts, clips, context) -> list:
    analyses = context.get("analyses")
    if analyses is None:
        analyses = analyze_clips(prompts, clips, context.get("use_3d"), context.get("estimator", ""), context.get("scorer"),
                                 context.get("targets"))
    if len(analyses) != len(clips):
        raise ValueError(f"{len(analyses)} analyses for {len(clips)} clips")
    return analyses


def _metric(analysis, name: str) -> float | None:
    value = getattr(analysis, "metrics", {}).get(name)
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _unit(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


def degenerate(prompt: str | None, analysis) -> str | None:
    """Why a clip scores 0 on every 3D component, or None: the analysis found it blank, noise or
    frozen (studio.geometry.metrics.degenerate_reason). Such a clip re-renders perfectly whatever
    its geometry (all-black frames: PSNR 60 dB, SSIM 1), so its measured consistency is no evidence
    of 3D structure, and scoring it would reward a policy for making no video at all.

    One exception: a frozen clip for a prompt that asks for a fixed camera and nothing else is
    what was asked for, and keeps its measured score.
    """
    reason = getattr(analysis, "degenerate", None)
    if not reason:
        return None
    if reason.startswith("frozen") and prompt:
        from studio.camera import parse_camera_motion

        if parse_camera_motion(prompt) == ["fixed"]:
            return None
    return reason


# ---------------------------------------------------------------------------------------------
# The components
# ---------------------------------------------------------------------------------------------
def s_recon(prompts, clips, **context) -> list[float]:
    """Re-rendering of the 3D reconstruction at the input cameras vs the frames.

    (½·SSIM + ½·PSNR mapped to [0, 1]) × recon_coverage: PSNR/SSIM are judged only where the
    render covers the frame, so without the coverage factor a clip could score well by leaving
    most of itself unreconstructed.
    """
    out = []
    for p, a in zip(prompts, _analyses(prompts, clips, context)):
        if a is None or degenerate(p, a):
            out.append(0.0)
            continue
        given = _metric(a, "s_recon")
        if given is not None:
            out.append(_unit(given))
            continue
        psnr, ssim = _metric(a, "recon_psnr"), _metric(a, "recon_ssim")
        parts = []
        if psnr is not None:
            parts.append(_unit((psnr - PSNR_FLOOR_DB) / (PSNR_CEIL_DB - PSNR_FLOOR_DB)))
        if ssim is not None:
            parts.append(_unit(ssim))
        coverage = _metric(a, "recon_coverage")
        out.append(float(np.mean(parts)) * (1.0 if coverage is None else _unit(coverage)) if parts else 0.0)
    return out


def novel_view(analysis, push: float = NOVEL_VIEW_PUSH) -> tuple[np.ndarray, float, int] | None:
    """Render the fused reconstruction from a camera beyond the most displaced input camera.

    The camera takes the rotation of the input camera farthest from the first one and moves
    `push` times as far from the first camera (pure rotations: that camera as is). Returns the
    uint8 image (H, W, 3), the share of its pixels the point cloud covers and the index of that
    input camera, or None without a reconstruction.
    """
    points = getattr(analysis, "points", None)
    if points is None or len(points) == 0:
        return None
    from studio.geometry.metrics import render_reconstruction

    c2w = np.asarray(analysis.c2w, dtype=np.float64)
    far = int(np.argmax(np.linalg.norm(c2w[:, :3, 3] - c2w[0, :3, 3], axis=1)))
    if far == 0:  # no translation: the most rotated camera
        cos = np.clip((np.einsum("ij,fij->f", c2w[0, :3, :3], c2w[:, :3, :3]) - 1) / 2, -1, 1)
        far = int(np.argmin(cos))
    cam = c2w[far].copy()
    cam[:3, 3] = c2w[0, :3, 3] + push * (c2w[far, :3, 3] - c2w[0, :3, 3])
    height, width = analysis.depth.shape[1:]
    images, covered = render_reconstruction(points, analysis.colors, analysis.K, cam[None], height, width)
    image = (np.clip(images[0], 0, 1) * 255).round().astype(np.uint8)
    return image, float(np.mean(covered[0])), far


def s_meta(prompts, clips, **context) -> list[float]:
    """Quality of the view from beyond the most displaced camera (method §3.3, ours).

    coverage × CLIP similarity of that rendered view to the prompt: holes (sparse or inconsistent
    geometry) and views that no longer show the described scene both score low. An analysis that
    carries its own `s_meta` metric is used as is.
    """
    scorer_name = context.get("scorer") or "tinyworld"
    out = []
    for p, a in zip(prompts, _analyses(prompts, clips, context)):
        if a is None or degenerate(p, a):
            out.append(0.0)
            continue
        given = _metric(a, "s_meta")
        if given is not None:
            out.append(_unit(given))
            continue
        view = novel_view(a)
        if view is None:
            out.append(0.0)
            continue
        image, coverage, far = view
        scorer = get_scorer(scorer_name)
        # The view is judged against the clip's own frame at that camera, so the score is a ratio in
        # [0, 1] whatever the scorer's similarity scale: 1 = the reconstruction looks as much like the
        # prompt as the video does there.
        frames = as_frames(clips[len(out)])
        reference = float(scorer.score(frames[far][None], p)) if far < len(frames) else 0.0
        similarity = float(scorer.score(image[None], p))
        out.append(_unit(coverage * (min(similarity / reference, 1.0) if reference > 1e-6 else 0.0)))
    return out


# World-R1's constants (the 1 in max(L/(N-1), 1), the 3 in exp(-L/3)) are in its units, where the
# scene plane sits at depth 1000; our paths are in units of the focus distance.
WORLD_R1_UNITS = 1000.0


def trajectory_score(cmp: dict | None) -> float:
    """World-R1's trajectory-alignment score in [0, 1] (world-r1-method.md section 3, item 4).

    cmp: studio.geometry.metrics.compare_trajectories of the estimated path against the target
    (`Analysis.trajectory`); None (no target path) scores 0.
    """
    if cmp is None:
        return 0.0
    n = cmp["num_frames"]
    u = WORLD_R1_UNITS
    L_p, L_t = cmp["path_length_pred"] * u, cmp["path_length_target"] * u
    th_p, th_t = cmp["rotation_pred_deg"], cmp["rotation_target_deg"]
    if cmp["translates"]:
        a, b = cmp["centres_pred"].reshape(-1), cmp["centres_target"].reshape(-1)
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cos = float(a @ b / denom) if denom > 0 else 0.0
        P = 0.5 * (1 + cos)
        E = float(np.exp(-abs(np.log(max(L_p, 1e-12) / L_t))))
        M = float(np.exp(-cmp["mean_centre_error"] * u / (2 * max(L_t / (n - 1), 1.0))))
        T = 0.4 * P + 0.3 * E + 0.3 * M
    else:
        T = float(np.exp(-L_p / 3))
    if cmp["rotates"]:
        R = (0.5 * np.exp(-cmp["mean_rotation_error_deg"] / 6) + 0.3 * np.exp(-cmp["last_rotation_error_deg"] / 6)
             + 0.2 * np.exp(-abs(np.log(max(th_p, 1e-12) / th_t))))
    else:
        R = float(np.exp(-th_p / 5))
    if not cmp["translates"] and not cmp["rotates"]:
        score = T * R
    elif cmp["rotates"] and not cmp["translates"]:
        score = 0.2 * T + 0.8 * R
    elif cmp["translates"] and not cmp["rotates"]:
        score = 0.8 * T + 0.2 * R
    else:
        score = 0.5 * (T + R)
    return float(np.clip(score, 0.0, 1.0))


def with_trajectory_score(analysis) -> dict:
    """The analysis's metrics with `s_traj` (trajectory_score, no degenerate rule) beside the
    trajectory errors it comes from: what the studio's tables and the study's metrics show."""
    out = {}
    for key, value in analysis.metrics.items():
        out[key] = value
        if key == "trajectory_direction_error_deg":
            out["s_traj"] = trajectory_score(analysis.trajectory)
    out.setdefault("s_traj", trajectory_score(analysis.trajectory))
    return out


def s_traj(prompts, clips, **context) -> list[float]:
    """Estimated camera path against the target path (method §3.4; 0 without a camera phrase).

    trajectory_score of the analysis's trajectory comparison; an analysis that carries its own
    `s_traj` metric is used as is.
    """
    out = []
    for p, a in zip(prompts, _analyses(prompts, clips, context)):
        if a is None or degenerate(p, a):
            out.append(0.0)
            continue
        given = _metric(a, "s_traj")
        out.append(_unit(given) if given is not None else trajectory_score(getattr(a, "trajectory", None)))
    return out


def r_gen(prompts, clips, **context) -> list[float]:
    """General quality: CLIP text–frame alignment averaged over frames (on for every item)."""
    analyses = context.get("analyses") or [None] * len(clips)
    scorer_name = context.get("scorer") or "tinyworld"
    out = []
    for p, c, a in zip(prompts, clips, analyses):
        value = None if a is None else _metric(a, "clip_score")
        if value is None:
            value = float(get_scorer(scorer_name).score(as_frames(c), p))
        out.append(value)
    return out


COMPONENTS_3D = ("s_recon", "s_meta", "s_traj")


def normalise(values: np.ndarray, group_ids: np.ndarray | None, mode: str) -> np.ndarray:
    """Standardise one component per prompt group ('group') or over the batch ('batch'); 'none' keeps it."""
    values = np.asarray(values, dtype=np.float64)
    if mode == "none":
        return values
    if mode == "batch" or group_ids is None:
        std = values.std()
        return (values - values.mean()) / std if std > 1e-8 else np.zeros_like(values)
    if mode != "group":
        raise ValueError(f"unknown normalisation {mode!r}")
    out = np.zeros_like(values)
    group_ids = np.asarray(group_ids)
    for g in np.unique(group_ids):
        m = group_ids == g
        std = values[m].std()
        out[m] = (values[m] - values[m].mean()) / std if std > 1e-8 else 0.0
    return out


def combine(components: dict[str, Sequence[float]], weights: dict[str, float], use_3d=None, group_ids=None, norm: str = "none") -> np.ndarray:
    """Weighted total; 3D components (names in COMPONENTS_3D) are zero where use_3d is False.

    `weights` maps component name → weight (the 3D ones already multiplied by w_3d).
    """
    n = len(next(iter(components.values())))
    flags = np.asarray(_flags(use_3d, n))
    total = np.zeros(n)
    for name, w in weights.items():
        if w == 0:
            continue
        values = normalise(np.asarray(components[name], dtype=np.float64), group_ids, norm)
        if name in COMPONENTS_3D:
            values = np.where(flags, values, 0.0)
        total += w * values
    return total


@dataclass
class RewardSet:
    """Named reward functions with weights.

    Calling it returns the raw components of each clip (plus 'r_3d' when all three 3D components
    are present); `total()` combines them. The two are separate because per-prompt normalisation
    needs whole prompt groups, which only the trainer has after gathering across processes.
    Components named in COMPONENTS_3D are switched off per item by use_3d and share one geometry
    analysis per clip (computed here only if some 3D weight is non-zero).
    """

    functions: dict[str, RewardFn]
    weights: dict[str, float]
    norm: str = "none"
    context: dict = field(default_factory=dict)  # passed to every function (estimator, scorer, …)

    def __call__(self, prompts, clips, use_3d=None, targets=None) -> dict[str, np.ndarray]:
        """targets: each clip's target camera path (None: parsed from its prompt), for the analysis."""
        clips = [as_frames(c) for c in clips]
        flags = _flags(use_3d, len(clips))
        ctx = dict(self.context, use_3d=flags)
        if targets is not None:
            ctx["targets"] = list(targets)
        if any(self.weights.get(n, 0) for n in COMPONENTS_3D if n in self.functions) and "analyses" not in ctx:
            ctx["analyses"] = analyze_clips(prompts, clips, flags, ctx.get("estimator", ""), ctx.get("scorer"),
                                            ctx.get("targets"))
        out = {}
        for name, fn in self.functions.items():
            values = np.asarray(fn(list(prompts), clips, **ctx), dtype=np.float64)
            if values.shape != (len(clips),):
                raise ValueError(f"reward {name!r} returned {values.shape} values for {len(clips)} clips")
            if name in COMPONENTS_3D:
                values = np.where(flags, values, 0.0)
            out[name] = values
        if all(n in out for n in COMPONENTS_3D):
            out["r_3d"] = sum(out[n] for n in COMPONENTS_3D)
        return out

    def total(self, components: dict[str, np.ndarray], use_3d=None, group_ids=None) -> np.ndarray:
        return combine(components, self.weights, use_3d, group_ids, self.norm)
