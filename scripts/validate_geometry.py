"""Acceptance check of the geometry engine on TinyWorld clips with ground truth (issue 3).

Prints two tables:
1. Every camera primitive: pose accuracy against the renderer's cameras and the prompt metrics.
2. Broken clips against the intact clip: shuffled frames (moving cameras only), per-frame
   non-rigid wobble, a teleporting object (all must score depth_consistency_l1 >= 2x and
   recon_psnr >= 3 dB lower), rigid per-frame shake (reported: it is a shaky camera, which
   trajectory_smoothness catches) and a wrong camera clause (>= 3x trajectory error).
   Shuffled clips are also scored against their own true cameras and on the camera path: a slow
   move shuffled is still a set of consistent views, so where odometry recovers it only the path
   can show it (docs/geometry.md).

Usage: python -m scripts.validate_geometry [--seeds 0 1 2] [--estimators ground-truth tinyworld] [--size 64]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.camera import MOVES, camera_clause  # noqa: E402
from studio.geometry import ESTIMATORS, analyze  # noqa: E402
from studio.geometry.metrics import umeyama_sim3  # noqa: E402
from studio.rewards import with_trajectory_score  # noqa: E402
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
    """Frames (and depth) in a random order; also the order, so the true cameras can follow it."""
    perm = rng.permutation(len(frames))
    while perm[0] == 0 or np.all(perm == np.arange(len(frames))):
        perm = rng.permutation(len(frames))
    return frames[perm], depth[perm], perm


def shaken(frames, depth, rng, shift_px: float = 2.0, rot_deg: float = 3.0, scale: float = 0.04):
    """Per-frame random 2D similarity (shift, roll, zoom) of image and depth: rigid camera shake.

    A warp like this is (almost) what a camera rotation does, so the reconstruction explains it
    as a shaky camera path: it shows in trajectory_smoothness, not in consistency or PSNR.
    """
    import cv2

    h, w = frames.shape[1:3]
    s = w / 64  # pixel amounts are given for 64x64
    out_f, out_d = frames.copy(), depth.copy()
    for i in range(1, len(frames)):
        A = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-rot_deg, rot_deg), 1 + rng.uniform(-scale, scale))
        A[:, 2] += rng.uniform(-shift_px * s, shift_px * s, 2)
        out_f[i] = cv2.warpAffine(frames[i], A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out_d[i] = cv2.warpAffine(depth[i], A, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    return out_f, out_d


def wobbled(frames, depth, rng, amplitude_px: float = 2.0, grid: int = 4):
    """Per-frame NON-rigid wobble: a smooth random displacement field (a few px) warps each frame
    and its depth, independently per frame: the texture swimming generated videos show. No camera
    motion explains it."""
    import cv2

    f_n, h, w = frames.shape[:3]
    amp = amplitude_px * w / 64  # pixel amounts are given for 64x64
    uu, vv = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out_f, out_d = frames.copy(), depth.copy()
    for i in range(1, f_n):
        coarse = rng.normal(0.0, amp, size=(grid, grid, 2)).astype(np.float32)
        flow = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        mx, my = uu + flow[..., 0], vv + flow[..., 1]
        out_f[i] = cv2.remap(frames[i], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out_d[i] = cv2.remap(depth[i], mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
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


ESTIMATOR_KWARGS: dict[str, dict] = {}   # per estimator, e.g. {"tinyworld": {"path": "runs/depth/x"}}


def estimator_available(name: str) -> str | None:
    if name == "ground-truth":
        return None
    try:
        from studio.geometry.depth import get_estimator

        get_estimator(name, **ESTIMATOR_KWARGS.get(name, {}))
    except Exception as e:  # noqa: BLE001 - report any reason the estimator cannot run
        return f"{type(e).__name__}: {e}"
    return None


def run_analysis(frames, depth, K, prompt, estimator):
    """The analysis, its metrics with World-R1's s_traj beside the trajectory errors (the tables show it)."""
    if estimator == "ground-truth":
        a = analyze(frames, prompt, "ground-truth", depth=depth, K=K, clip_scorer=None)
    else:
        a = analyze(frames, prompt, estimator, K=K, clip_scorer=None, estimator_kwargs=ESTIMATOR_KWARGS.get(estimator))
    a.metrics = with_trajectory_score(a)
    return a


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


# Corruptions the metrics must catch (acceptance) and one they should not (reported beside them).
CORRUPTIONS = ("shuffled", "wobble", "teleport")
REPORTED = ("shake",)


def meets_bar(scores: tuple) -> bool:
    """The issue's bar for a broken clip: depth_consistency_l1 >= 2x the intact clip's, recon_psnr >= 3 dB lower."""
    return scores[0] >= 2.0 and scores[1] >= 3.0


def corrupt(name, clip, prompt, seed, size, move, rng):
    """(frames, depth, true c2w) of the broken variant of a clip, or None where it does not apply."""
    if name == "shuffled":
        # A fixed camera's frames are identical: shuffling them leaves the clip unchanged.
        if move == "fixed":
            return None
        frames, depth, perm = shuffled(clip.frames, clip.depth, rng)
        return frames, depth, clip.c2w[perm]
    if name == "wobble":
        return (*wobbled(clip.frames, clip.depth, rng), clip.c2w)
    if name == "shake":
        return (*shaken(clip.frames, clip.depth, rng), clip.c2w)
    if name == "teleport":
        return (*teleported(prompt, seed, size), clip.c2w)
    raise ValueError(name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--estimators", nargs="+", default=["ground-truth", "tinyworld"], choices=sorted(ESTIMATORS))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--moves", nargs="+", default=list(MOVES))
    ap.add_argument("--per-clip", action="store_true", help="also print every broken clip's numbers")
    ap.add_argument("--depth-weights", default=None, help="folder of TinyWorld depth weights (default assets/depth)")
    args = ap.parse_args()
    if args.depth_weights:
        ESTIMATOR_KWARGS["tinyworld"] = {"path": args.depth_weights}
    failures = []
    t0 = time.time()
    for est in args.estimators:
        why = estimator_available(est)
        if why:
            print(f"\n## estimator {est}: SKIPPED ({why})")
            continue
        print(f"\n## estimator {est}, {args.size}x{args.size}, 17 frames, seeds {args.seeds}\n")
        print("| move | rel. rot. err (deg) | centre err (% path) | trajectory_error_deg | s_traj | depth_L1 | PSNR dB | SSIM | smoothness | pairs ok |")
        print("|---|---|---|---|---|---|---|---|---|---|")
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
                br = {}
                for name in (*CORRUPTIONS, *REPORTED):
                    variant = corrupt(name, clip, prompt, seed, args.size, move, rng)
                    if variant is None:
                        continue
                    b = run_analysis(*variant[:2], clip.K, prompt, est)
                    m = b.metrics
                    br[name] = (m["depth_consistency_l1"] / max(a.metrics["depth_consistency_l1"], 1e-9),
                                a.metrics["recon_psnr"] - m["recon_psnr"], m["trajectory_smoothness"],
                                a.metrics["trajectory_smoothness"], pose_accuracy(b.c2w, variant[2]),
                                m["trajectory_error_deg"] / max(a.metrics["trajectory_error_deg"], 1e-9),
                                m["s_traj"] < a.metrics["s_traj"])
                br["intact_smoothness"] = a.metrics["trajectory_smoothness"]
                wrong_prompt = f"{SCENE} {camera_clause([WRONG[move]])}"
                mw = run_analysis(clip.frames, clip.depth, clip.K, wrong_prompt, est).metrics
                br["wrong"] = (mw["trajectory_error_deg"] / max(a.metrics["trajectory_error_deg"], 1e-9),
                               mw["s_traj"])
                broken_rows.append((move, seed, br))
            rre = max(r[0]["rel_rot_err_deg"] for r in rows)
            ce = [r[0]["centre_err_pct"] for r in rows if r[0]["centre_err_pct"] is not None]
            te = max(r[1]["trajectory_error_deg"] for r in rows)
            keys = ("s_traj", "depth_consistency_l1", "recon_psnr", "recon_ssim", "trajectory_smoothness", "pose_ok_fraction")
            mean = {k: float(np.mean([r[1][k] for r in rows])) for k in keys}
            print(f"| {move} | {rre:.3f} | {fmt(max(ce) if ce else None, 1)} | {te:.2f} | {mean['s_traj']:.3f} | "
                  f"{mean['depth_consistency_l1']:.4f} | {mean['recon_psnr']:.1f} | {mean['recon_ssim']:.3f} | "
                  f"{mean['trajectory_smoothness']:.2f} | {mean['pose_ok_fraction']:.2f} |")
            if rre > 2.0 or (ce and max(ce) > 15.0) or te > 3.0:
                failures.append(f"{est} {move}: rel rot {rre:.2f}, centre {ce}, traj {te:.2f}")
        print("\n(max over seeds for the errors, mean for the rest)\n")
        if args.per_clip:
            names = [n for n in (*CORRUPTIONS, *REPORTED)]
            print("| move | seed | " + " | ".join(f"{n} L1 x | {n} PSNR drop" for n in names) + " | wrong clause traj x |")
            print("|---|---|" + "---|---|" * len(names) + "---|")
            for move, seed, br in broken_rows:
                cells = " | ".join(f"{br[n][0]:.1f} | {br[n][1]:.1f}" if n in br else "- | -" for n in names)
                print(f"| {move} | {seed} | {cells} | {br['wrong'][0]:.0f} |")
            print()
        print("| corruption | clips | meet both (L1 >= 2x and PSNR >= 3 dB lower) | median L1 ratio | median PSNR drop (dB) "
              "| min PSNR drop | median smoothness intact -> broken | smoothness < half the intact clip's |")
        print("|---|---|---|---|---|---|---|---|")
        intact_smooth = float(np.median([br["intact_smoothness"] for _, _, br in broken_rows]))
        for name in (*CORRUPTIONS, *REPORTED):
            vals = [(move, seed, br[name]) for move, seed, br in broken_rows if name in br]
            if not vals:  # e.g. only the fixed camera asked for: nothing to shuffle
                continue
            ok = [meets_bar(v[2]) for v in vals]
            label = name if name in CORRUPTIONS else f"{name} (reported, not required)"
            print(f"| {label} | {len(vals)} | {sum(ok)}/{len(vals)} | {np.median([v[2][0] for v in vals]):.1f} | "
                  f"{np.median([v[2][1] for v in vals]):.1f} | {min(v[2][1] for v in vals):.1f} | "
                  f"{intact_smooth:.2f} -> {np.median([v[2][2] for v in vals]):.2f} | "
                  f"{sum(v[2][2] < 0.5 * v[2][3] for v in vals)}/{len(vals)} |")
            if name in CORRUPTIONS:
                failures += [f"{est} {m} seed {sd} {name}: L1 x{v[0]:.2f}, PSNR drop {v[1]:.1f} dB; its true cameras "
                             f"recovered to {v[4]['rel_rot_err_deg']:.2f} deg, centre err "
                             f"{fmt(v[4]['centre_err_pct'], 1)} % of the path"
                             for (m, sd, v), good in zip(vals, ok) if not good]
        n = len(broken_rows)
        wrong_ok = sum(br["wrong"][0] >= 3 for _, _, br in broken_rows)
        print(f"| wrong camera clause | {n} | {wrong_ok}/{n} (>= 3x trajectory_error_deg) | "
              f"{np.median([br['wrong'][0] for _, _, br in broken_rows]):.0f}x trajectory error | | | | |")
        failures += [f"{est} {m} seed {sd} wrong clause: x{br['wrong'][0]:.2f}"
                     for m, sd, br in broken_rows if br["wrong"][0] < 3.0]
        sh = [br["shuffled"] for _, _, br in broken_rows if "shuffled" in br]
        if sh:
            above = [v for v in sh if meets_bar(v)]
            below = [v for v in sh if not meets_bar(v)]
            med = lambda vs, k: fmt(float(np.median([v[4][k] for v in vs if v[4][k] is not None])) if vs else None, 2)  # noqa: E731
            print(f"\nshuffled clips against their own (shuffled) true cameras, median centre err % / rel. rot. err deg: "
                  f"below the L1/PSNR bar {med(below, 'centre_err_pct')} / {med(below, 'rel_rot_err_deg')} "
                  f"({len(below)} clips), above it {med(above, 'centre_err_pct')} / {med(above, 'rel_rot_err_deg')} "
                  f"({len(above)} clips).")
            print(f"shuffled clips' camera path: trajectory_smoothness below half the intact clip's on "
                  f"{sum(v[2] < 0.5 * v[3] for v in sh)}/{len(sh)}, trajectory_error_deg >= 3x on "
                  f"{sum(v[5] >= 3 for v in sh)}/{len(sh)} (median {np.median([v[5] for v in sh]):.0f}x), "
                  f"s_traj lower on {sum(v[6] for v in sh)}/{len(sh)}.")
        print("\nshuffled: the fixed-camera clip is left out (its frames are identical, so shuffling changes nothing).\n"
              "Where odometry recovers every shuffled step (slow camera moves) the reconstruction is consistent and\n"
              "only the camera path shows the damage (trajectory_smoothness, s_traj). A wobbled clip's pairs fail the\n"
              "pose check and fall back to identity, so its path is 'smooth'; pose_ok_fraction shows that instead.")
    print(f"\n{len(failures)} acceptance failures ({time.time() - t0:.0f} s)")
    for f in failures:
        print("  FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
