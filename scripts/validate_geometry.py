"""Acceptance check of the geometry engine on TinyWorld clips with ground truth (issue 3).

Prints two tables:
1. Every camera primitive: pose accuracy against the renderer's cameras and the prompt metrics.
2. Broken clips (shuffled frames, per-frame jitter, teleporting object) and a wrong camera clause
   against the intact clip: the metrics must separate them.

Usage: python scripts/validate_geometry.py [--seeds 0 1 2] [--estimators ground-truth tinyworld] [--size 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.camera import MOVES, camera_clause  # noqa: E402
from studio.geometry import analyze  # noqa: E402
from studio.geometry.metrics import umeyama_sim3  # noqa: E402
from studio.geometry.projection import relative_to_first, rotation_angle_deg  # noqa: E402
from studio.tinyworld import render_clip  # noqa: E402

SCENE = "a red cube and a blue sphere on a checker floor under a day sky."
WRONG = {"push_in": "pull_out", "pull_out": "push_in", "move_left": "move_right", "move_right": "move_left",
         "orbit_left": "orbit_right", "orbit_right": "orbit_left", "pan_left": "pan_right", "pan_right": "pan_left",
         "tilt_up": "tilt_down", "tilt_down": "tilt_up", "fixed": "orbit_left"}


def pose_accuracy(c2w: np.ndarray, gt_c2w: np.ndarray) -> dict:
    """Mean relative (consecutive-pair) rotation error and scale-aligned centre error vs ground truth."""
    p, g = relative_to_first(c2w), relative_to_first(gt_c2w)
    rel_p = np.linalg.inv(p[:-1]) @ p[1:]
    rel_g = np.linalg.inv(g[:-1]) @ g[1:]
    rre = float(rotation_angle_deg(np.swapaxes(rel_p[:, :3, :3], 1, 2) @ rel_g[:, :3, :3]).mean())
    c_p, c_g = p[:, :3, 3], g[:, :3, 3]
    L = float(np.linalg.norm(np.diff(c_g, axis=0), axis=1).sum())
    if L < 1e-6:
        return {"rel_rot_err_deg": rre, "centre_err_pct": None}
    s = umeyama_sim3(c_p, c_g)[0]
    err = float(np.linalg.norm(s * c_p - c_g, axis=1).mean())
    return {"rel_rot_err_deg": rre, "centre_err_pct": 100 * err / L}


def shuffled(frames, depth, rng):
    perm = rng.permutation(len(frames))
    while perm[0] == 0 or np.all(perm == np.arange(len(frames))):
        perm = rng.permutation(len(frames))
    return frames[perm], depth[perm]


def jittered(frames, depth, rng, shift_px: float = 2.0, rot_deg: float = 3.0, scale: float = 0.04):
    """Per-frame random 2D similarity (shift, roll, zoom) of image and depth: a shaky, unstable clip."""
    import cv2

    h, w = frames.shape[1:3]
    out_f, out_d = frames.copy(), depth.copy()
    for i in range(1, len(frames)):
        A = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-rot_deg, rot_deg), 1 + rng.uniform(-scale, scale))
        A[:, 2] += rng.uniform(-shift_px, shift_px, 2)
        out_f[i] = cv2.warpAffine(frames[i], A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out_d[i] = cv2.warpAffine(depth[i], A, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return out_f, out_d


def teleported(prompt: str, seed: int, size: int):
    """The first object jumps to another spot halfway through the clip."""
    clip = render_clip(prompt, seed=seed, height=size, width=size)
    scene = copy.deepcopy(clip.scene)
    o = scene.objects[0]
    o.x, o.z = -o.x + (0.9 if o.x <= 0 else -0.9), o.z
    moved = render_clip(prompt, seed=seed, height=size, width=size, scene=scene)
    half = len(clip.frames) // 2
    frames = np.concatenate([clip.frames[:half], moved.frames[half:]])
    depth = np.concatenate([clip.depth[:half], moved.depth[half:]])
    return frames, depth


def estimator_available(name: str) -> str | None:
    if name == "ground-truth":
        return None
    try:
        from studio.geometry.depth import get_estimator

        get_estimator(name)
    except Exception as e:  # noqa: BLE001 - report any reason the estimator cannot run
        return f"{type(e).__name__}: {e}"
    return None


def run_analysis(frames, depth, K, prompt, estimator):
    if estimator == "ground-truth":
        return analyze(frames, prompt, "ground-truth", depth=depth, K=K, clip_scorer=None)
    return analyze(frames, prompt, estimator, K=K, clip_scorer=None)


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--estimators", nargs="+", default=["ground-truth", "tinyworld"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--moves", nargs="+", default=list(MOVES))
    args = ap.parse_args()
    failures = []
    t0 = time.time()
    for est in args.estimators:
        why = estimator_available(est)
        if why:
            print(f"\n## estimator {est}: SKIPPED ({why})")
            continue
        print(f"\n## estimator {est}, {args.size}x{args.size}, 17 frames, seeds {args.seeds}\n")
        print("| move | rel. rot. err (deg) | centre err (% path) | trajectory_error_deg | s_traj | depth_L1 | PSNR dB | SSIM | pairs ok |")
        print("|---|---|---|---|---|---|---|---|---|")
        broken_rows = []
        for move in args.moves:
            rows = []
            for seed in args.seeds:
                prompt = f"{SCENE} {camera_clause([move])}"
                clip = render_clip(prompt, seed=seed, height=args.size, width=args.size)
                a = run_analysis(clip.frames, clip.depth, clip.K, prompt, est)
                acc = pose_accuracy(a.c2w, clip.c2w)
                rows.append((acc, a.metrics))
                # Broken variants and the wrong clause, scored the same way.
                rng = np.random.default_rng(seed)
                variants = {
                    "shuffled": shuffled(clip.frames, clip.depth, rng),
                    "jitter": jittered(clip.frames, clip.depth, rng),
                    "teleport": teleported(prompt, seed, args.size),
                }
                br = {}
                for name, (f, d) in variants.items():
                    m = run_analysis(f, d, clip.K, prompt, est).metrics
                    br[name] = (m["depth_consistency_l1"] / max(a.metrics["depth_consistency_l1"], 1e-9),
                                a.metrics["recon_psnr"] - m["recon_psnr"])
                wrong_prompt = f"{SCENE} {camera_clause([WRONG[move]])}"
                mw = run_analysis(clip.frames, clip.depth, clip.K, wrong_prompt, est).metrics
                br["wrong"] = (mw["trajectory_error_deg"] / max(a.metrics["trajectory_error_deg"], 1e-9),
                               mw["s_traj"])
                broken_rows.append((move, seed, br))
            rre = max(r[0]["rel_rot_err_deg"] for r in rows)
            ce = [r[0]["centre_err_pct"] for r in rows if r[0]["centre_err_pct"] is not None]
            te = max(r[1]["trajectory_error_deg"] for r in rows)
            mean = {k: float(np.mean([r[1][k] for r in rows])) for k in ("s_traj", "depth_consistency_l1", "recon_psnr", "recon_ssim", "pose_ok_fraction")}
            print(f"| {move} | {rre:.3f} | {fmt(max(ce) if ce else None, 1)} | {te:.2f} | {mean['s_traj']:.3f} | "
                  f"{mean['depth_consistency_l1']:.4f} | {mean['recon_psnr']:.1f} | {mean['recon_ssim']:.3f} | {mean['pose_ok_fraction']:.2f} |")
            if rre > 2.0 or (ce and max(ce) > 15.0) or te > 3.0:
                failures.append(f"{est} {move}: rel rot {rre:.2f}, centre {ce}, traj {te:.2f}")
        print("\n(max over seeds for the errors, mean for the rest)\n")
        print("| move | seed | shuffled L1 x | shuffled PSNR drop | jitter L1 x | jitter PSNR drop | teleport L1 x | teleport PSNR drop | wrong clause traj x | wrong s_traj |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for move, seed, br in broken_rows:
            print(f"| {move} | {seed} | {br['shuffled'][0]:.1f} | {br['shuffled'][1]:.1f} | {br['jitter'][0]:.1f} | "
                  f"{br['jitter'][1]:.1f} | {br['teleport'][0]:.1f} | {br['teleport'][1]:.1f} | {br['wrong'][0]:.0f} | {br['wrong'][1]:.2f} |")
            for name in ("shuffled", "jitter", "teleport"):
                if br[name][0] < 2.0 or br[name][1] < 3.0:
                    failures.append(f"{est} {move} seed {seed} {name}: L1 x{br[name][0]:.2f}, PSNR drop {br[name][1]:.1f} dB")
            if br["wrong"][0] < 3.0:
                failures.append(f"{est} {move} seed {seed} wrong clause: x{br['wrong'][0]:.2f}")
        n = len(broken_rows)
        for name in ("shuffled", "jitter", "teleport"):
            ok = sum(br[name][0] >= 2.0 and br[name][1] >= 3.0 for _, _, br in broken_rows)
            print(f"\n{name}: {ok}/{n} clips meet both (L1 >= 2x and PSNR >= 3 dB lower); "
                  f"median L1 x{np.median([br[name][0] for _, _, br in broken_rows]):.1f}, "
                  f"median PSNR drop {np.median([br[name][1] for _, _, br in broken_rows]):.1f} dB")
        print(f"wrong clause: {sum(br['wrong'][0] >= 3 for _, _, br in broken_rows)}/{n} clips >= 3x trajectory error")
    print(f"\n{len(failures)} acceptance failures ({time.time() - t0:.0f} s)")
    for f in failures:
        print("  FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
