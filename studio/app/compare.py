"""Generate & compare: baseline and tuned generators on the same prompt and seed, each analysed in 3D.

The chain is the project's one-way flow: prompt -> pipelines (baseline, tuned = base + LoRA) ->
frames -> geometry.analyze -> metrics and reward components -> files for the UI (MP4, depth MP4,
GLB/PLY point clouds, metrics JSON) and a Plotly figure of the camera paths.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from studio import rewards
from studio.cache import cache_entry, digest
from studio.util import atomic_write_json

KEEP_COMPARISONS = 64  # comparison folders kept under data/compare (about 1 MB each at 64 px)

# (key, label, which direction is better)
METRICS: list[tuple[str, str, str]] = [
    ("depth_consistency_l1", "Depth-consistency L1", "lower"),
    ("recon_psnr", "Reconstruction PSNR (dB)", "higher"),
    ("recon_ssim", "Reconstruction SSIM", "higher"),
    ("trajectory_error_deg", "Trajectory error (°)", "lower"),
    ("s_traj", "S_traj", "higher"),
    ("clip_score", "CLIP score", "higher"),
    ("reward/s_recon", "Reward S_recon", "higher"),
    ("reward/s_meta", "Reward S_meta", "higher"),
    ("reward/s_traj", "Reward S_traj", "higher"),
    ("reward/r_gen", "Reward R_gen", "higher"),
]


@dataclass
class Side:
    """One generated clip with everything the UI shows about it."""

    label: str
    clip: object          # studio.pipelines.Clip
    analysis: object      # studio.geometry.Analysis
    metrics: dict[str, float | None]
    files: dict[str, str]


@dataclass
class Comparison:
    prompt: str
    seed: int
    sides: list[Side]
    table: list[list]             # rows: metric label, baseline, tuned, delta, better?
    figure: object                # plotly Figure of the camera paths
    out_dir: Path
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def side(self, label: str) -> Side | None:
        return next((s for s in self.sides if s.label == label), None)


def reward_components(prompt: str, frames: np.ndarray, analysis) -> dict[str, float]:
    """World-R1's reward components for one clip, from an existing analysis (no second analysis)."""
    out = {}
    for name, fn in (("s_recon", rewards.s_recon), ("s_meta", rewards.s_meta), ("s_traj", rewards.s_traj),
                     ("r_gen", rewards.r_gen)):
        try:
            out[f"reward/{name}"] = float(fn([prompt], [frames], analyses=[analysis])[0])
        except Exception as e:  # noqa: BLE001 - a missing scorer must not hide the other metrics
            out[f"reward/{name}"] = None
            out.setdefault("_errors", []).append(f"{name}: {e}")
    return out


def _aligned_path(estimated: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Estimated camera path at the target's scale (the same alignment the metrics use), for plotting."""
    from studio.geometry.metrics import compare_trajectories
    from studio.geometry.projection import relative_to_first

    path = relative_to_first(np.asarray(estimated, np.float64)).copy()
    path[:, :3, 3] *= compare_trajectories(estimated, target)["scale"]
    return path


def metric_table(base: dict, tuned: dict | None) -> list[list]:
    rows = []
    for key, label, better in METRICS:
        b = base.get(key)
        t = tuned.get(key) if tuned else None
        delta = (t - b) if isinstance(b, (int, float)) and isinstance(t, (int, float)) else None
        verdict = ""
        if delta is not None and abs(delta) > 1e-9:
            improved = delta < 0 if better == "lower" else delta > 0
            verdict = "tuned better" if improved else "baseline better"
        rows.append([label, _r(b), _r(t), _r(delta), verdict])
    return rows


def _r(x):
    return None if x is None else round(float(x), 4)


def compare(
    prompt: str,
    *,
    seed: int = 0,
    num_frames: int = 17,
    height: int = 64,
    width: int = 64,
    steps: int = 20,
    guidance: float = 5.0,
    camera_init: bool = True,
    model: str = "tinyworld",
    lora: str | None = None,
    estimator: str = "tinyworld",
    out_dir: Path | str | None = None,
    progress: Callable | None = None,
) -> Comparison:
    """Baseline vs tuned (base + `lora`) from the same seed, each analysed; `lora=None` -> baseline only."""
    from studio.geometry import analyze
    from studio.pipelines import load_pipeline
    from studio.plots import trajectory_figure
    from studio.video import colorize_depth, write_mp4

    if out_dir is None:
        raise ValueError("compare() needs out_dir, the folder its files go to (the studio's: compare_dir)")
    t_start = time.perf_counter()
    base = load_pipeline(model)
    base.check_inputs(prompt, seed, num_frames, height, width, steps, guidance)  # fail before heavy work
    tuned = load_pipeline(model, lora=lora) if lora else None
    notes = base.prompt_warnings(prompt)
    if not tuned:
        notes.append("No tuned model in the slot, so only the baseline is shown: train a World-R1 LoRA for this base "
                     "in the Training tab, or pick a LoRA.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipes = [("baseline", base)] + ([("tuned", tuned)] if tuned else [])
    n = len(pipes)
    timings: dict[str, float] = {}

    def stage(i: int, frac: float, what: str):
        if progress is not None:
            progress((i + frac) / n, desc=what)

    def finish(i: int, label: str, clip, generate_s: float) -> Side:
        """Analysis and files of one side; runs while the next side generates."""
        t1 = time.perf_counter()
        stage(i, 0.65, f"{label}: 3D analysis")
        analysis = analyze(clip.frames, prompt, estimator=estimator, target_c2w=clip.trajectory)
        t2 = time.perf_counter()
        metrics = {**rewards.with_trajectory_score(analysis), **reward_components(prompt, clip.frames, analysis)}
        errors = metrics.pop("_errors", [])
        notes.extend(f"{label}: {e}" for e in errors)
        stage(i, 0.85, f"{label}: writing files")
        files = {
            "video": str(clip.to_mp4(out / f"{label}.mp4")),
            "depth_video": str(write_mp4(colorize_depth(analysis.depth), out / f"{label}_depth.mp4")),
            "glb": str(analysis.write_glb(out / f"{label}.glb")),
            "ply": str(analysis.write_ply(out / f"{label}.ply")),
        }
        timings[f"{label}/generate_s"] = generate_s
        timings[f"{label}/analyze_s"] = t2 - t1
        timings[f"{label}/files_s"] = time.perf_counter() - t2
        return Side(label, clip, analysis, metrics, files)

    # Generation holds the shared base weights (adapter on/off), so the sides generate one after
    # the other; the baseline's analysis runs on the second core while the tuned clip generates.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for i, (label, pipe) in enumerate(pipes):
            t0 = time.perf_counter()
            clip = pipe.generate(prompt, seed=seed, num_frames=num_frames, height=height, width=width, steps=steps,
                                 guidance=guidance, camera_init=camera_init,
                                 progress=lambda f, desc="", i=i, label=label: stage(i, 0.6 * f, f"{label}: {desc}"))
            pending.append(pool.submit(finish, i, label, clip, time.perf_counter() - t0))
        sides = [f.result() for f in pending]

    target = sides[0].clip.trajectory
    paths = {}
    if target is not None:
        paths["target"] = target
    for s in sides:
        paths[s.label] = _aligned_path(s.analysis.c2w, target) if target is not None else s.analysis.c2w
    figure = trajectory_figure(paths, title="Camera paths (estimated, aligned to the prompt's path)")
    table = metric_table(sides[0].metrics, sides[1].metrics if len(sides) > 1 else None)
    report = {
        "prompt": prompt, "seed": seed, "model": model, "lora": lora, "camera_init": camera_init,
        "num_frames": num_frames, "height": height, "width": width, "steps": steps, "guidance": guidance,
        "moves": sides[0].clip.moves, "notes": notes,
        "sides": {s.label: {"metrics": s.metrics, "timings": {**s.clip.timings}, "files": s.files} for s in sides},
    }
    atomic_write_json(out / "metrics.json", json.loads(json.dumps(report, default=_jsonable)))
    timings["total_s"] = time.perf_counter() - t_start
    return Comparison(prompt, seed, sides, table, figure, out, notes, timings)


def compare_dir(data_dir: Path | str, *inputs) -> Path:
    """data/compare/<SHA-256 of the inputs>: the same inputs get the same folder across restarts
    (Python's hash() of a string changes with every process); the oldest beyond KEEP_COMPARISONS go."""
    return cache_entry(Path(data_dir) / "compare", digest("compare", *inputs), keep=KEEP_COMPARISONS)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
