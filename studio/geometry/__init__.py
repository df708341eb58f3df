"""Geometry engine: depth, camera poses, fused point clouds and 3D-consistency metrics of a clip.

`analyze(frames, prompt)` reads top to bottom as the algorithm: check inputs -> depth -> odometry
-> fusion -> re-render every input camera from the other frames' points -> metrics. Array conventions: docs/architecture.md.
Heavy libraries (open3d, torch, transformers, open_clip) are imported only where used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio.geometry.depth import ESTIMATORS, DepthResult, get_estimator

__all__ = ["Analysis", "ESTIMATORS", "DepthResult", "analyze", "check_inputs", "get_estimator"]

STAGES = ("depth", "odometry", "fusion", "render", "metrics")


@dataclass
class Analysis:
    """Everything analyze() found about one clip; shapes follow docs/architecture.md."""

    depth: np.ndarray          # (F, H, W) float32, 0 = no depth
    K: np.ndarray              # (3, 3)
    c2w: np.ndarray            # (F, 4, 4) relative to frame 0
    confidence: np.ndarray     # (F, H, W) per-pixel depth confidence x per-frame pose confidence
    points: np.ndarray         # (N, 3) fused world points
    colors: np.ndarray         # (N, 3) float32 in [0, 1]
    metrics: dict              # depth_consistency_l1, recon_psnr, recon_ssim, trajectory_error_deg, clip_score,
                               # trajectory_smoothness, ...
    timings: dict              # wall seconds per stage (STAGES) and total
    pose_report: list          # one PairReport per consecutive frame pair
    renders: np.ndarray | None = None   # (F, H, W, 3) float32: each input camera rendered from the other frames
    estimator: str = ""
    prompt: str | None = None
    warnings: list[str] = field(default_factory=list)
    cpu_timings: dict = field(default_factory=dict)   # process CPU seconds per stage and total (wall varies with load)
    degenerate: str | None = None   # why the clip has no 3D consistency to measure (blank, noise, frozen), or None
    trajectory: dict | None = None  # metrics.compare_trajectories against the target path; None without one

    def to_dict(self) -> dict:
        """Plain JSON-able summary (no per-pixel arrays)."""
        return {
            "estimator": self.estimator,
            "prompt": self.prompt,
            "metrics": dict(self.metrics),
            "timings": dict(self.timings),
            "cpu_timings": dict(self.cpu_timings),
            "pose_report": [p.to_dict() for p in self.pose_report],
            "K": np.asarray(self.K).tolist(),
            "c2w": np.asarray(self.c2w).tolist(),
            "num_points": int(len(self.points)),
            "warnings": list(self.warnings),
            "degenerate": self.degenerate,
        }

    def write_ply(self, path: str | Path) -> Path:
        from studio.geometry.fusion import write_ply

        return write_ply(path, self.points, self.colors)

    def write_glb(self, path: str | Path) -> Path:
        from studio.geometry.fusion import write_glb

        return write_glb(path, self.points, self.colors)


def check_inputs(frames, depth=None, K=None) -> None:
    """Raise ValueError with what was expected unless the inputs follow the array conventions."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array (F, H, W, 3) uint8, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating) and np.isnan(frames).any():
        raise ValueError("frames contain NaN; expected uint8 RGB values")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB (F, H, W, 3), got dtype {frames.dtype}")
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to analyse camera motion, got {frames.shape[0]}")
    if frames.shape[1] < 8 or frames.shape[2] < 8:
        raise ValueError(f"frames must be at least 8x8 pixels, got {frames.shape[1]}x{frames.shape[2]}")
    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != frames.shape[:3]:
            raise ValueError(f"depth must have shape {frames.shape[:3]} (F, H, W), got {depth.shape}")
        if not np.all(np.isfinite(depth)) or (depth < 0).any():
            raise ValueError("depth must be finite and >= 0 (0 = nothing hit)")
    if K is not None:
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K must be a finite (3, 3) pinhole matrix with positive focal lengths, got {K!r}")


_ESTIMATOR_CACHE: dict[tuple, object] = {}


def _estimator(name: str, depth, K, kwargs: dict | None):
    """Estimators with weights are loaded once per process; ground truth wraps the given depth."""
    if name == "ground-truth":
        return get_estimator(name, depth=depth, K=K)
    if depth is not None:
        raise ValueError(f'depth was given but estimator is {name!r}; use estimator="ground-truth" to analyse with it')
    key = (name, tuple(sorted((kwargs or {}).items())))
    if key not in _ESTIMATOR_CACHE:
        _ESTIMATOR_CACHE[key] = get_estimator(name, **(kwargs or {}))
    return _ESTIMATOR_CACHE[key]


def analyze(frames: np.ndarray, prompt: str | None = None, estimator: str = "tinyworld", *,
            target_c2w: np.ndarray | None = None, depth: np.ndarray | None = None, K: np.ndarray | None = None, estimator_kwargs: dict | None = None,
            clip_scorer: str | None = "tinyworld", odometry_settings=None, keep_renders: bool = False) -> Analysis:
    """Reconstruct a clip and measure how well it holds together in 3D.

    frames: uint8 (F, H, W, 3), F >= 2. target_c2w: the camera path the clip was asked for
    (F, 4, 4), relative to the first camera (a Clip's `trajectory`), against which
    trajectory_error_deg and the trajectory comparison are measured; without it the prompt's camera
    clause is parsed for one (None / no clause: trajectory_error_deg None, trajectory None).
    World-R1's S_traj is computed from the comparison in studio.rewards.
    estimator: "tinyworld", "depth-anything" or "ground-truth" (then pass depth=, optionally K=).
    clip_scorer: studio.scoring scorer name for clip_score, or None to skip it.
    Deterministic: the same inputs give the same numbers.
    """
    from studio.geometry import metrics as M
    from studio.geometry.fusion import fuse_point_cloud
    from studio.geometry.poses import OdometrySettings, estimate_poses

    check_inputs(frames, depth, K)
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
    if target_c2w is None:
        target_c2w = M.target_trajectory(prompt, len(frames))
    else:
        target_c2w = np.asarray(target_c2w, dtype=np.float64)
        if target_c2w.shape != (len(frames), 4, 4) or not np.all(np.isfinite(target_c2w)):
            raise ValueError(f"target_c2w must be a finite ({len(frames)}, 4, 4) camera path, one pose per frame, "
                             f"got shape {target_c2w.shape}")
    warnings: list[str] = []
    # A blank, noise or frozen clip re-renders perfectly (or not at all) whatever its geometry:
    # its numbers are computed as usual but say nothing, and rewards score it at the bottom.
    degenerate = M.degenerate_reason(frames)
    if degenerate:
        warnings.append(f"degenerate clip: {degenerate}")
    clock = _StageClock()

    est = _estimator(estimator, depth, K, estimator_kwargs).estimate(frames, K)
    clock.lap("depth")
    if not (est.depth > 0).any():
        raise ValueError("the depth estimate has no valid pixel; nothing to reconstruct")

    if odometry_settings is None:
        # A learned depth drifts in scale from frame to frame: fit it with the poses, and carry on
        # with the depth brought to frame 0's scale. The renderer's depth is exact.
        odometry_settings = OdometrySettings(estimate_scale=estimator != "ground-truth")
    poses = estimate_poses(frames, est.depth, est.K, est.confidence, odometry_settings)
    if poses.depth_scale is not None and not np.all(poses.depth_scale == 1.0):
        est = DepthResult((est.depth * poses.depth_scale[:, None, None]).astype(np.float32), est.K, est.confidence)
    clock.lap("odometry")
    failed = [r.pair for r in poses.report if not r.ok]
    if failed:
        warnings.append(f"camera pose not found for {len(failed)} of {len(poses.report)} frame pairs "
                        f"(identity used, low confidence): {failed}")

    points, colors = fuse_point_cloud(frames, est.depth, est.K, poses.c2w, est.confidence)
    clock.lap("fusion")

    renders, covered = M.render_leave_one_out(frames, est.depth, est.K, poses.c2w, est.confidence)
    clock.lap("render")

    metrics: dict = {"depth_consistency_l1": M.depth_consistency_l1(est.depth, est.K, poses.c2w, est.confidence)}
    metrics.update(M.recon_scores(frames, renders, covered, est.depth, est.confidence))
    trajectory = None
    if target_c2w is not None:
        trajectory = M.compare_trajectories(poses.c2w, target_c2w, unit_length=focus_distance(est.depth))
    metrics.update(_trajectory_metrics(trajectory))
    metrics.update(M.trajectory_smoothness(poses.c2w, unit_length=focus_distance(est.depth)))
    metrics["pose_ok_fraction"] = float(np.mean([r.ok for r in poses.report]))
    metrics["num_points"] = int(len(points))
    metrics["clip_score"] = None
    if clip_scorer and prompt:
        try:
            metrics["clip_score"] = M.clip_score(frames, prompt, clip_scorer)
        except (ImportError, OSError, RuntimeError, ValueError) as e:  # missing module or weights
            warnings.append(f"clip_score unavailable: {type(e).__name__}: {e}")
    clock.lap("metrics")
    timings, cpu_timings = clock.finish()

    confidence = est.confidence * poses.confidence[:, None, None].astype(np.float32)
    return Analysis(depth=est.depth, K=est.K, c2w=poses.c2w, confidence=confidence, points=points, colors=colors,
                    metrics=metrics, timings=timings, cpu_timings=cpu_timings,
                    pose_report=poses.report, renders=renders if keep_renders else None, estimator=estimator,
                    prompt=prompt, warnings=warnings, degenerate=degenerate, trajectory=trajectory)


class _StageClock:
    """Wall and process-CPU seconds per stage; CPU is what a stage costs when the shared cores are busy."""

    def __init__(self):
        self.start = self.last = (time.perf_counter(), time.process_time())
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.wall[stage], self.cpu[stage] = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now

    def finish(self) -> tuple[dict, dict]:
        self.wall["total"] = time.perf_counter() - self.start[0]
        self.cpu["total"] = time.process_time() - self.start[1]
        return ({k: round(v, 4) for k, v in self.wall.items()}, {k: round(v, 4) for k, v in self.cpu.items()})


def _trajectory_metrics(cmp: dict | None) -> dict:
    from studio.geometry import metrics as M

    if cmp is None:
        return {"trajectory_error_deg": None, "trajectory_rotation_error_deg": None,
                "trajectory_direction_error_deg": None}
    return {"trajectory_error_deg": M.trajectory_error_deg(cmp),
            "trajectory_rotation_error_deg": cmp["mean_rotation_error_deg"],
            "trajectory_direction_error_deg": cmp["translation_direction_error_deg"]}


def focus_distance(depth: np.ndarray) -> float:
    """The scene's unit of length: median depth of the first frame (1 when it has none)."""
    valid = depth[0][depth[0] > 0]
    return float(np.median(valid)) if valid.size else 1.0
