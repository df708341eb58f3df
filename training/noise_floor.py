"""Know what each metric can show: its value on perfect clips, on codec round trips and on the base model.

    python -m training.noise_floor [--n-prompts 24] [--scene-seeds 0 1] [--seeds 0 1 2] [--out docs/noise_floor]

For held-out test prompts, every evaluation metric (training/evaluate.py) is measured on
- render_gt_depth: ground-truth TinyWorld renders of the prompt (different scene seeds), analysed
  with the renderer's exact depth and K: the floor of odometry, fusion and the metrics themselves;
- render: the same renders analysed with the evaluation's depth estimator (the depth net);
- codec: the renders encoded and decoded by the generator's own codec (``pipe.vae``): the best a
  generated clip can look through that decoder;
- base: base-model clips of the same prompts (evaluation settings, camera-aware init on).
Trajectory metrics are also scored against the WRONG camera clause (every move replaced by its
opposite: left↔right, in↔out, up↔down), which gives the other end of their scale, and
``traj_right_closer`` counts the clips whose path is nearer the prompt's clause than the wrong one.
If base sits where the renders sit, a metric cannot show a gain; if renders do not separate from
the wrong clause, the metric cannot see camera direction at all.

Outputs OUT.md and OUT.json (means with bootstrap CIs over prompts, paired differences base −
render and base − codec). Clips and measurements are cached like training/evaluate.py; base clips
share the evaluation's cache, so a later baseline evaluation reuses them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from studio.util import atomic_write_text

from training.evaluate import (
    LOWER_IS_BETTER, ROOT, EvalCache, Settings, System, _fmt_ci, bootstrap_ci, check_backends, dir_fingerprint, load_rows, load_scorer_or_none,
    measure_clip, model_dir, paired_summary, per_prompt_means, render_depth,
)

CONDITIONS = ("render_gt_depth", "render", "codec", "base")
METRICS = ("depth_consistency_l1", "recon_psnr", "recon_ssim", "trajectory_error_deg", "s_traj",
           "wrong_trajectory_error_deg", "wrong_s_traj", "traj_right_closer",
           "clip_score", "s_recon", "s_meta", "r_gen", "motion_absdiff", "motion_flow_px")
# Metrics with a better direction, the ones a verdict about the base model's room makes sense for.
VERDICT_METRICS = {"depth_consistency_l1", "recon_psnr", "recon_ssim", "trajectory_error_deg", "s_traj",
                   "traj_right_closer", "clip_score", "s_recon", "s_meta", "r_gen"}
OPPOSITE = {"push_in": "pull_out", "move_left": "move_right", "orbit_left": "orbit_right",
            "pan_left": "pan_right", "tilt_up": "tilt_down", "fixed": "fixed"}
OPPOSITE.update({v: k for k, v in OPPOSITE.items()})


# ---------------------------------------------------------------------------------------------
# Trajectory checks
# ---------------------------------------------------------------------------------------------
def wrong_moves(moves: list[str]) -> list[str]:
    """Every move replaced by its opposite (push in → pull out, orbit left → orbit right, …)."""
    return [OPPOSITE[m] for m in moves]


def trajectory_scores(analysis, moves: list[str]) -> dict[str, float] | None:
    """trajectory_error_deg and s_traj of the estimated path against the target path of `moves`."""
    from studio.camera import camera_trajectory
    from studio.geometry import metrics as M

    if not moves:
        return None
    target = camera_trajectory(moves, len(analysis.c2w))
    valid = analysis.depth[0][analysis.depth[0] > 0]
    focus = float(np.median(valid)) if valid.size else 1.0  # as studio.geometry does
    cmp = M.compare_trajectories(analysis.c2w, target, unit_length=focus)
    return {"trajectory_error_deg": M.trajectory_error_deg(cmp), "s_traj": M.s_traj(cmp)}


def noise_floor_record(frames, prompt: str, moves: list[str], settings: Settings, depth=None, K=None) -> dict:
    """evaluate.measure_clip plus the trajectory scores against the prompt's and the wrong clause."""
    record, analysis = measure_clip(frames, prompt, settings.estimator, settings.scorer, depth, K)
    if analysis is None:
        return record
    right, wrong = trajectory_scores(analysis, moves), trajectory_scores(analysis, wrong_moves(moves))
    if right is not None:
        record.update({f"wrong_{k}": v for k, v in wrong.items()})
        record["traj_right_closer"] = float(right["trajectory_error_deg"] < wrong["trajectory_error_deg"])
    return record


# ---------------------------------------------------------------------------------------------
# Clips of each condition
# ---------------------------------------------------------------------------------------------
def codec_roundtrip(pipe, frames: np.ndarray) -> np.ndarray:
    """uint8 frames → the pipeline's codec (TinyWorldCodec or a Wan VAE) → uint8 frames."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
    video = video.permute(3, 0, 1, 2)[None].to(pipe.vae.device, pipe.vae.dtype)  # (1, 3, F, H, W)
    with torch.no_grad():
        enc = pipe.vae.encode(video)
        if hasattr(enc, "latent_dist"):  # AutoencoderKLWan: a distribution, normalised like decode_latents expects
            z = enc.latent_dist.mode()
            cfg = pipe.vae.config
            if "latents_mean" in cfg:
                mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1).to(z)
                std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1).to(z)
                z = (z - mean) / std
        else:
            z = enc[0] if isinstance(enc, tuple) else enc
    return pipe.decode_latents(z)[0]


def render(row: dict, scene_seed: int, num_frames: int, height: int, width: int):
    from studio.tinyworld import render_clip

    return render_clip(row["prompt"], num_frames=num_frames, height=height, width=width, seed=scene_seed)


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run(args, argv: list[str]) -> dict:
    import warnings

    import torch

    from studio.camera import parse_camera_motion

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="ignored unknown words")
    rows = [r for r in load_rows(args.prompts) if parse_camera_motion(r["prompt"])][: args.n_prompts]
    settings = Settings(estimator=args.estimator, scorer=None if args.scorer == "none" else args.scorer)
    conditions = list(args.conditions)
    if any(c != "render_gt_depth" for c in conditions):
        check_backends(settings)
    needs_model = any(c in conditions for c in ("codec", "base"))
    pipe = None
    f_n, h, w = args.num_frames, args.height, args.width
    if needs_model:
        from training.evaluate import get_pipeline

        pipe = get_pipeline(System("baseline", args.model))
        d = pipe.defaults()
        f_n, h, w = f_n or d["num_frames"], h or d["height"], w or d["width"]
    f_n, h, w = f_n or 17, h or 64, w or 64
    gen = Settings(num_frames=f_n, height=h, width=w, estimator=args.estimator, scorer=settings.scorer)
    load_scorer_or_none(settings.scorer)
    cache = EvalCache(args.cache)
    gt = Settings(estimator="ground-truth", scorer=settings.scorer)
    model_fp = dir_fingerprint(model_dir(args.model)) or args.model
    base_system = System("baseline", args.model)
    base_key = base_system.fingerprint(Settings())  # the evaluation's default-settings baseline cache
    measure_key = {c: (gt if c == "render_gt_depth" else settings).measurement_fingerprint() + "-nf" for c in CONDITIONS}

    gt_everywhere = settings.estimator == "ground-truth"
    records: dict[str, list[dict]] = {c: [] for c in conditions}
    total = len(rows)
    for i, row in enumerate(rows):
        prompt, moves = row["prompt"], parse_camera_motion(row["prompt"])
        for scene_seed in args.scene_seeds:
            rkey = _key("render", scene_seed, f_n, h, w)
            rc = None

            def rendered():
                nonlocal rc
                rc = rc or render(row, scene_seed, f_n, h, w)
                return rc

            frames = cache.frames(rkey, prompt, scene_seed, lambda: rendered().frames)
            # With the "ground-truth" estimator (tests, plumbing) renders and their codec round trips
            # are analysed with the render's depth, which is exact for both.
            exact = (lambda: (rendered().depth, rendered().K)) if gt_everywhere else (lambda: (None, None))
            for cond in ("render_gt_depth", "render"):
                if cond not in conditions:
                    continue
                s = gt if cond == "render_gt_depth" else settings
                rec = cache.record(rkey, measure_key[cond], prompt, scene_seed, lambda: noise_floor_record(
                    frames, prompt, moves, s, rendered().depth if s is gt else exact()[0], rendered().K if s is gt else exact()[1]))
                records[cond].append({**rec, "prompt_index": i, "seed": scene_seed})
            if "codec" in conditions:
                ckey = _key("codec", model_fp, scene_seed, f_n, h, w)
                cframes = cache.frames(ckey, prompt, scene_seed, lambda: codec_roundtrip(pipe, frames))
                rec = cache.record(ckey, measure_key["codec"], prompt, scene_seed,
                                   lambda: noise_floor_record(cframes, prompt, moves, settings, *exact()))
                records["codec"].append({**rec, "prompt_index": i, "seed": scene_seed})
        if "base" in conditions:
            for seed in args.seeds:
                key = base_key if (args.num_frames, args.height, args.width) == (None, None, None) else base_system.fingerprint(gen)
                bframes = cache.frames(key, prompt, seed, lambda: np.asarray(pipe.generate(
                    prompt, seed=seed, camera_init=True, num_frames=f_n, height=h, width=w).frames))
                proxy = (lambda: render_depth(row, bframes)) if gt_everywhere else (lambda: (None, None))
                rec = cache.record(key, measure_key["base"], prompt, seed,
                                   lambda: noise_floor_record(bframes, prompt, moves, settings, *proxy()))
                records["base"].append({**rec, "prompt_index": i, "seed": seed})
        print(f"  {i + 1}/{total} prompts, {time.perf_counter() - t_start:.0f} s", flush=True)

    n = len(rows)
    table: dict[str, dict] = {}
    for m in METRICS:
        table[m] = {}
        for c in conditions:
            mean, lo, hi = bootstrap_ci(per_prompt_means(records[c], m, n), args.n_boot, args.boot_seed)
            table[m][c] = {"mean": mean, "ci": [lo, hi], "n": int(np.isfinite(per_prompt_means(records[c], m, n)).sum())}
    diffs: dict[str, dict] = {}
    if "base" in conditions:
        for ref in ("render", "codec"):
            if ref not in conditions:
                continue
            diffs[f"base-{ref}"] = {}
            for m in METRICS:
                s = paired_summary(per_prompt_means(records[ref], m, n), per_prompt_means(records["base"], m, n),
                                   args.n_boot, args.boot_seed)
                diffs[f"base-{ref}"][m] = {"diff": s["diff"], "ci": s["ci"], "n": s["n_paired"]}
    command = "python -m training.noise_floor " + " ".join(shlex.quote(a) for a in argv)
    res = {
        "command": command, "n_prompts": n, "prompts": args.prompts, "scene_seeds": list(args.scene_seeds),
        "seeds": list(args.seeds), "conditions": conditions, "estimator": args.estimator, "scorer": settings.scorer,
        "model": args.model, "clip_size": [f_n, h, w], "n_boot": args.n_boot, "boot_seed": args.boot_seed,
        "metrics": table, "paired": diffs,
        "failed": {c: sum(1 for r in records[c] if r.get("analysis_failed")) for c in conditions},
        "cache": {"root": str(args.cache), "hits": cache.hits, "misses": cache.misses},
        "seconds": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(res, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown_report(res))
    return res


def _verdict(m: str, res: dict) -> str:
    """Where base sits relative to the codec floor (or the render one without a codec)."""
    ref = "base-codec" if "base-codec" in res["paired"] else "base-render"
    d = res["paired"].get(ref, {}).get(m) if m in VERDICT_METRICS else None
    if not d or d["ci"] is None or not all(math.isfinite(c) for c in d["ci"]):
        return ""
    lo, hi = d["ci"]
    if lo <= 0 <= hi:
        return "base at floor (no room)"
    worse = (lo > 0) if m in LOWER_IS_BETTER else (hi < 0)
    return "headroom" if worse else "base beyond floor"


def markdown_report(res: dict) -> str:
    conds = res["conditions"]
    lines = ["# Noise floor: what each metric can show", "", f"Command: `{res['command']}`", "",
             f"- {res['n_prompts']} held-out test prompts with a camera clause from `{res['prompts']}`; renders at "
             f"scene seeds {res['scene_seeds']}, base clips at seeds {res['seeds']}; clips {res['clip_size'][0]}×"
             f"{res['clip_size'][1]}×{res['clip_size'][2]}; estimator `{res['estimator']}`, scorer `{res['scorer']}`.",
             "- render_gt_depth: renders with exact depth and K; render: renders through the depth estimator; "
             "codec: renders encoded/decoded by the generator's codec; base: the base model.",
             "- wrong_*: the same clips scored against the opposite camera clause; traj_right_closer: share of clips "
             "whose path is nearer the prompt's clause than the opposite one (0.5 = blind).",
             f"- Mean [95 % CI], bootstrap over prompts ({res['n_boot']} resamples). Verdict compares base with the "
             "codec floor (paired Δ = base − codec, CI excludes 0 or not).", ""]
    header = "| metric | " + " | ".join(conds + [f"Δ {k}" for k in res["paired"]] + ["verdict"]) + " |"
    lines += [header, "|---" * (2 + len(conds) + len(res["paired"])) + "|"]
    for m, per in res["metrics"].items():
        cells = [_fmt_ci(per[c]["mean"], per[c]["ci"]) for c in conds]
        dcells = [_fmt_ci(res["paired"][k][m]["diff"], res["paired"][k][m]["ci"]) for k in res["paired"]]
        arrow = " ↓" if m in LOWER_IS_BETTER or m == "wrong_trajectory_error_deg" else ""
        lines.append(f"| {m}{arrow} | " + " | ".join(cells + dcells + [_verdict(m, res)]) + " |")
    lines += ["", f"Failed reconstructions: {res['failed']}. Cache: {res['cache']['hits']} hits, "
              f"{res['cache']['misses']} misses; wall time {res['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description="Metric noise floor: renders, codec round trips and base clips side by side.")
    ap.add_argument("--model", default="tinyworld", help="generator whose codec and base clips are measured")
    ap.add_argument("--prompts", default="tinyworld:test")
    ap.add_argument("--n-prompts", type=int, default=24)
    ap.add_argument("--scene-seeds", type=int, nargs="+", default=[0, 1], help="render layouts per prompt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="base-model seeds per prompt (the evaluation's, so its cache is shared)")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    ap.add_argument("--estimator", default="tinyworld")
    ap.add_argument("--scorer", default="tinyworld", help="'none' to skip CLIP numbers")
    ap.add_argument("--num-frames", type=int, default=None, help="default: the generator's (17)")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--out", default="docs/noise_floor")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "eval-cache"))
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--boot-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    args.cache = args.cache or None
    return args


def main(argv: list[str] | None = None) -> int:
    from training.run_setup import report_main

    return report_main(parse_args, run, markdown_report, argv, errors=(FileNotFoundError, ValueError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
