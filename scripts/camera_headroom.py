"""Where the camera-path headroom of the TinyWorld generator is, before and without RL (issue 8).

Two measurements on the base model, with the geometry engine's trajectory error:

1. Camera-aware initialization strength: the same prompts and seeds sampled with no camera init
   and with the stepwise-delta injection at several wrap strengths w (the method's 0.35 and
   stronger). Does a stronger warp make the clip follow the clause?
2. Best of K: K samples per prompt (different seeds). How far apart are they, does S_traj rank
   them the way the trajectory error does, and how low is the error of the sample S_traj picks?
   That is the error a policy would reach if GRPO turned every group into its best member: the
   headroom the reward can see.

Usage:
    python -m scripts.camera_headroom --out docs/camera_headroom
    python -m scripts.camera_headroom --strengths 0.35 1.0 --n-prompts 8 --best-of 4 --bestof-prompts 4 --out runs/ch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.util import atomic_write_text  # noqa: E402

SWEEP_METRICS = ("trajectory_error_deg", "trajectory_error_single_deg", "trajectory_error_move1_deg",
                 "trajectory_error_move2_deg", "s_traj", "depth_consistency_l1", "recon_psnr", "clip_score",
                 "motion_flow_px")


def mean_of(records: list[dict], key: str) -> float | None:
    vals = [r[key] for r in records if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(vals)) if vals else None


def strength_sweep(pipe, rows: list[dict], seeds: list[int], strengths: list[float], measure) -> dict:
    """Mean of SWEEP_METRICS per setting: 'off' (no camera init) and each wrap strength."""
    settings: list[tuple[str, float | None]] = [("off", None)] + [(f"w={w:g}", w) for w in strengths]
    default_w = pipe.config.warp_strength
    out = {}
    try:
        for label, w in settings:
            if w is not None:
                pipe.register_to_config(warp_strength=float(w))
            recs = [measure(pipe.generate(r["prompt"], seed=s, camera_init=w is not None).frames, r["prompt"])
                    for r in rows for s in seeds]
            out[label] = {k: mean_of(recs, k) for k in SWEEP_METRICS} | {"n": len(recs)}
            print(label, {k: None if v is None else round(v, 3) for k, v in out[label].items()}, flush=True)
    finally:
        pipe.register_to_config(warp_strength=default_w)
    return out


def best_of_k(pipe, rows: list[dict], k: int, seed0: int, measure) -> dict:
    """Per prompt: K seeds' trajectory errors and S_traj; the error of the S_traj-best sample."""
    per_prompt = []
    for r in rows:
        recs = [measure(pipe.generate(r["prompt"], seed=seed0 + i, camera_init=True).frames, r["prompt"]) for i in range(k)]
        err = np.array([x.get("trajectory_error_deg", np.nan) for x in recs], dtype=float)
        st = np.array([x.get("s_traj", np.nan) for x in recs], dtype=float)
        ok = np.isfinite(err) & np.isfinite(st)
        if ok.sum() < 2:
            continue
        err, st = err[ok], st[ok]
        corr = float(np.corrcoef(err, st)[0, 1]) if err.std() > 0 and st.std() > 0 else None
        per_prompt.append({"prompt": r["prompt"], "moves": r.get("moves"), "mean_error": float(err.mean()),
                           "picked_error": float(err[np.argmax(st)]), "min_error": float(err.min()), "max_error": float(err.max()),
                           "error_std": float(err.std()), "s_traj_std": float(st.std()), "corr_error_s_traj": corr})
        print(per_prompt[-1]["moves"], {k2: v for k2, v in per_prompt[-1].items() if k2 not in ("prompt", "moves")}, flush=True)
    mean = lambda key: float(np.mean([p[key] for p in per_prompt if p[key] is not None]))  # noqa: E731
    return {"k": k, "n_prompts": len(per_prompt), "mean_error": mean("mean_error"), "picked_error": mean("picked_error"),
            "min_error": mean("min_error"), "mean_corr_error_s_traj": mean("corr_error_s_traj"), "prompts": per_prompt}


def markdown(res: dict) -> str:
    lines = [f"# Camera-path headroom of the base model\n\nCommand: `{res['command']}`\n",
             f"## Camera-aware initialization strength ({res['sweep_prompts']} held-out prompts × seeds {res['seeds']})\n",
             "| setting | " + " | ".join(SWEEP_METRICS) + " |", "|---|" + "---|" * len(SWEEP_METRICS)]
    for label, m in res["sweep"].items():
        lines.append(f"| {label} | " + " | ".join("-" if m[k] is None else f"{m[k]:.3f}" for k in SWEEP_METRICS) + " |")
    b = res["best_of_k"]
    lines += ["", f"## Best of K = {b['k']} ({b['n_prompts']} train prompts with a moving camera clause, camera init on)\n",
              "| mean error (°) | error of the S_traj-best sample | lowest error in the group | mean corr(error, S_traj) |",
              "|---|---|---|---|",
              f"| {b['mean_error']:.1f} | {b['picked_error']:.1f} ({100 * (b['picked_error'] / b['mean_error'] - 1):+.0f} %) "
              f"| {b['min_error']:.1f} | {b['mean_corr_error_s_traj']:.2f} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyworld")
    ap.add_argument("--prompts", default="tinyworld:test")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.35, 0.7, 1.0, 1.5])
    ap.add_argument("--best-of", type=int, default=8)
    ap.add_argument("--bestof-source", default="tinyworld:train")
    ap.add_argument("--bestof-prompts", type=int, default=16)
    ap.add_argument("--bestof-seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "camera_headroom")
    args = ap.parse_args(argv)

    import torch

    from studio.camera import parse_camera_motion
    from studio.pipelines import load_pipeline
    from training.evaluate import load_rows, measure_clip

    torch.set_num_threads(args.threads)
    t0 = time.time()
    pipe = load_pipeline(args.model)

    def measure(frames, prompt):
        return measure_clip(frames, prompt, "tinyworld", "tinyworld")[0]

    rows = load_rows(args.prompts, args.n_prompts)
    sweep = strength_sweep(pipe, rows, args.seeds, args.strengths, measure)
    moving = []
    for r in load_rows(args.bestof_source):
        moves = parse_camera_motion(r["prompt"]) or []
        if moves and moves != ["fixed"]:
            moving.append({**r, "moves": moves})
        if len(moving) == args.bestof_prompts:
            break
    best = best_of_k(pipe, moving, args.best_of, args.bestof_seed, measure)
    res = {"command": "python -m scripts.camera_headroom " + " ".join(argv if argv is not None else sys.argv[1:]),
           "sweep_prompts": len(rows), "seeds": args.seeds, "sweep": sweep, "best_of_k": best,
           "wall_s": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "report.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(args.out / "report.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
