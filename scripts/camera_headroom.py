"""Where the camera-path headroom of the TinyWorld generator is, before and without RL (issue 8).

Two measurements on the base model, with the geometry engine's trajectory error:

1. Camera-aware initialization settings: the same prompts and seeds sampled with no camera init
   and with the stepwise-delta injection at several wrap strengths w (the method's 0.35 and
   stronger), and other settings (`--warp`: low-pass box, injected steps, the warped-start mode).
   Does a stronger or sharper warp make the clip follow the clause?
2. Best of K: K samples per prompt (different seeds). How far apart are they, does S_traj rank
   them the way the trajectory error does, and how low is the error of the sample S_traj picks?
   That is the error a policy would reach if GRPO turned every group into its best member: the
   headroom the reward can see.
3. What decides the camera path in a rollout: K rollouts of the trainer's SDE (the `tinyworld-cpu`
   preset's steps, noise level and trained steps) from ONE initial noise, against K ODE samples
   from K initial noises. GRPO can only credit the trained steps' noise; if that noise moved the
   path little, the policy gradient would have nothing to learn from.

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


# Pipeline config keys a sweep may change, with the type of their values.
WARP_KEYS = {"warp_strength": float, "warp_box": int, "warp_steps": int, "warp_degradation": float,
             "warp_upscale": int, "camera_init_mode": str}


def parse_warp_setting(text: str) -> dict:
    """'warp_box=1,warp_strength=0.5' -> {'warp_box': 1, 'warp_strength': 0.5} (pipeline config keys)."""
    out = {}
    for part in text.split(","):
        key, sep, value = (x.strip() for x in part.partition("="))
        try:
            if not sep or key not in WARP_KEYS:
                raise ValueError
            out[key] = WARP_KEYS[key](value)
        except ValueError:
            raise SystemExit(f"--warp takes KEY=VALUE[,KEY=VALUE] with keys from {tuple(WARP_KEYS)} "
                             f"and values of their type, got {text!r}") from None
    return out


def strength_sweep(pipe, rows: list[dict], seeds: list[int], strengths: list[float], measure,
                   warps: list[dict] | None = None) -> dict:
    """Mean of SWEEP_METRICS per setting: 'off' (no camera init), each wrap strength, and each
    other warp setting (pipeline config keys, e.g. a smaller low-pass box)."""
    settings: list[tuple[str, dict | None]] = [("off", None)] + [(f"w={w:g}", {"warp_strength": float(w)}) for w in strengths]
    settings += [(",".join(f"{k.removeprefix('warp_')}={v if isinstance(v, str) else f'{v:g}'}" for k, v in d.items()), d)
                 for d in warps or []]
    defaults = {k: pipe.config[k] for k in WARP_KEYS if k in pipe.config}
    out = {}
    try:
        for label, change in settings:
            pipe.register_to_config(**defaults)
            if change:
                pipe.register_to_config(**change)
            recs = [measure(pipe.generate(r["prompt"], seed=s, camera_init=change is not None).frames, r["prompt"])
                    for r in rows for s in seeds]
            out[label] = {k: mean_of(recs, k) for k in SWEEP_METRICS} | {"n": len(recs)}
            print(label, {k: None if v is None else round(v, 3) for k, v in out[label].items()}, flush=True)
    finally:
        pipe.register_to_config(**defaults)
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


def sde_spread(pipe, rows: list[dict], k: int, seed0: int, measure, window: list[int] | None = None,
               noise_level: float | None = None) -> dict:
    """Std of the trajectory error over K rollouts that share the initial noise (SDE noise varies)
    and over K ODE samples from different initial noises, per prompt, with the trainer's settings
    (or SDE on only the steps in `window`, as Flow-GRPO-Fast, and another noise level)."""
    import torch

    from training import flow_grpo
    from training.config import get_preset
    from training.train import camera_injector, sampling_sigmas

    cfg = get_preset("tinyworld-cpu")
    sigmas = sampling_sigmas(pipe, cfg.num_steps)
    steps = window if window else flow_grpo.trained_steps(cfg.num_steps, cfg.timestep_fraction, 0, 0.5, None)
    level = cfg.noise_level if noise_level is None else noise_level

    def errors(prompt: str, seeds: list[int], noise_level: float) -> np.ndarray:
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt([prompt], cfg.guidance_scale)
        out = []
        for i, seed in enumerate(seeds):
            with torch.no_grad():
                x = pipe.prepare_latents([prompt], [seed], cfg.num_frames, cfg.height, cfg.width, camera_init=cfg.camera_init)
                ro = flow_grpo.rollout(lambda z, s: pipe.predict_velocity(z, s, cond, uncond, cfg.guidance_scale), x, sigmas,
                                       steps, noise_level, torch.Generator().manual_seed(i),
                                       camera_injector(pipe, x, [prompt], [seed], cfg))
                frames = np.asarray(pipe.decode_latents(ro.final_latents))[0]
            out.append(measure(frames, prompt).get("trajectory_error_deg", np.nan))
        return np.asarray(out, dtype=float)

    per_prompt = []
    for r in rows:
        same = errors(r["prompt"], [seed0] * k, level)
        varied = errors(r["prompt"], [seed0 + 1 + i for i in range(k)], 0.0)
        per_prompt.append({"moves": r.get("moves"), "sde_only_std": float(np.nanstd(same)), "sde_only_mean": float(np.nanmean(same)),
                           "initial_noise_std": float(np.nanstd(varied)), "initial_noise_mean": float(np.nanmean(varied))})
        print(per_prompt[-1], flush=True)
    return {"k": k, "n_prompts": len(per_prompt), "noise_level": level, "trained_steps": list(steps),
            "num_steps": cfg.num_steps, "sde_only_std": float(np.mean([p["sde_only_std"] for p in per_prompt])),
            "initial_noise_std": float(np.mean([p["initial_noise_std"] for p in per_prompt])), "prompts": per_prompt}


def markdown(res: dict) -> str:
    lines = ["# Camera-path headroom of the base model\n", "Commands:\n"] + [f"- `{c}`" for c in res["commands"]] + [""]
    if "sweep" in res:
        lines += [f"## Camera-aware initialization settings ({res['sweep_prompts']} held-out prompts × seeds {res['seeds']})\n",
                  "Unnamed settings keep the shipped generator's: w = 0.35, 3×3 low-pass box, 8 injected steps, "
                  "stepwise-delta mode.\n",
                  "| setting | " + " | ".join(SWEEP_METRICS) + " |", "|---|" + "---|" * len(SWEEP_METRICS)]
        for label, m in res["sweep"].items():
            lines.append(f"| {label} | " + " | ".join("-" if m[k] is None else f"{m[k]:.3f}" for k in SWEEP_METRICS) + " |")
        lines.append("")
    b = res.get("best_of_k")
    if b:
        lines += ["", f"## Best of K = {b['k']} ({b['n_prompts']} train prompts with a moving camera clause, camera init on)\n",
                  "| mean error (°) | error of the S_traj-best sample | lowest error in the group | mean corr(error, S_traj) |",
                  "|---|---|---|---|",
                  f"| {b['mean_error']:.1f} | {b['picked_error']:.1f} ({100 * (b['picked_error'] / b['mean_error'] - 1):+.0f} %) "
                  f"| {b['min_error']:.1f} | {b['mean_corr_error_s_traj']:.2f} |", ""]
    spreads = [res[k] for k in sorted(res) if k.startswith("sde_spread")]
    if spreads:
        d = spreads[0]
        lines += [f"## What moves the camera path in a rollout ({d['n_prompts']} two-move train prompts, K = {d['k']})\n",
                  f"Rollouts of {d['num_steps']} steps; SDE noise on the listed steps, ODE on the others. "
                  "Spread of trajectory_error_deg: std within a prompt, mean over prompts.\n",
                  "| SDE steps | noise level | one initial noise, SDE noise varies (what GRPO credits) | mean error | "
                  "K initial noises, ODE |", "|---|---|---|---|---|"]
        for d in spreads:
            mean_err = float(np.mean([p["sde_only_mean"] for p in d["prompts"]]))
            lines.append(f"| {d['trained_steps']} | {d['noise_level']} | {d['sde_only_std']:.1f}° | {mean_err:.1f}° "
                         f"| {d['initial_noise_std']:.1f}° |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyworld")
    ap.add_argument("--prompts", default="tinyworld:test")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.35, 0.7, 1.0, 1.5])
    ap.add_argument("--warp", action="append", default=[], metavar="KEY=V[,KEY=V]",
                    help=f"another camera-init setting for the sweep (keys {', '.join(WARP_KEYS)}); repeatable")
    ap.add_argument("--best-of", type=int, default=8)
    ap.add_argument("--bestof-source", default="tinyworld:train")
    ap.add_argument("--bestof-prompts", type=int, default=16)
    ap.add_argument("--bestof-seed", type=int, default=1000)
    ap.add_argument("--sde-prompts", type=int, default=4, help="two-move train prompts for the SDE spread")
    ap.add_argument("--sde-window", type=int, nargs="+", default=None,
                    help="SDE on only these step indices (Flow-GRPO-Fast); default: the preset's trained steps")
    ap.add_argument("--sde-noise-level", type=float, default=None, help="default: the preset's")
    ap.add_argument("--parts", nargs="+", choices=("sweep", "best", "sde"), default=["sweep", "best", "sde"])
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

    command = "python -m scripts.camera_headroom " + " ".join(argv if argv is not None else sys.argv[1:])
    # Parts not run this time keep their numbers from an earlier report in --out.
    old = args.out / "report.json"
    res = json.loads(old.read_text()) if old.is_file() else {}
    res.setdefault("commands", [res.pop("command")] if "command" in res else [])
    res["commands"] = [c for c in res["commands"] if c != command] + [command]
    if "sweep" in args.parts:
        rows = load_rows(args.prompts, args.n_prompts)
        res.update(sweep_prompts=len(rows), seeds=args.seeds,
                   sweep=strength_sweep(pipe, rows, args.seeds, args.strengths, measure,
                                         [parse_warp_setting(w) for w in args.warp]))
    if {"best", "sde"} & set(args.parts):
        train_rows = [{**r, "moves": parse_camera_motion(r["prompt"]) or []} for r in load_rows(args.bestof_source)]
    if "best" in args.parts:
        moving = [r for r in train_rows if r["moves"] and r["moves"] != ["fixed"]][: args.bestof_prompts]
        res["best_of_k"] = best_of_k(pipe, moving, args.best_of, args.bestof_seed, measure)
    if "sde" in args.parts:
        two = [r for r in train_rows if len(r["moves"]) == 2][: args.sde_prompts]
        key = "sde_spread" if not args.sde_window and args.sde_noise_level is None else \
            f"sde_spread_w{'-'.join(map(str, args.sde_window or []))}_a{args.sde_noise_level}"
        res[key] = sde_spread(pipe, two, args.best_of, args.bestof_seed, measure, args.sde_window, args.sde_noise_level)
    res["wall_s"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "report.json", json.dumps(res, indent=2) + "\n")
    atomic_write_text(args.out / "report.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
