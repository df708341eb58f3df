"""Evaluate a TinyWorld generator on the held-out test prompts.

- Colour / shape right: the CLIP scorer (``studio.scoring.load_scorer("tinyworld")``) picks, over
  frames 0, 4, 8, 12, 16, the most likely of "a photo of a {colour} object" (10 colours) and
  "a photo of a {shape}" (5 shapes), the templates of training/eval_clip.py. Main figure: the
  single-object test prompts (the judge is unambiguous there); "any object" counts a hit when the
  pick is one of the scene's objects. The same judge on renders of the same prompts is the ceiling,
  and on those renders encoded and decoded by the generator's own codec the codec's ceiling (what
  a perfect generator in that latent space could reach).
- Camera adherence: ``studio.geometry.analyze`` estimates the camera path of each generated clip;
  reported are its trajectory_error_deg and s_traj against the prompt's path, and whether the
  estimated path is closest to the prompt's own move sequence among all sequences of the same
  length (move match), with and without camera-aware initialization, same seeds.
- A contact sheet PNG of test clips (frames 0, 4, 8, 12, 16; generated beside the render).

    python -m training.eval_generator [--model tinyworld] [--num-prompts 120] [--camera-prompts 60]
        [--split test|dynamic] [--scorer CLIP_DIR] [--steps 20] [--guidance 5] [--shift S]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from studio.util import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
COLOR_PROMPT = "a photo of a {} object"  # as training/eval_clip.py
SHAPE_PROMPT = "a photo of a {}"
JUDGE_FRAMES = [0, 4, 8, 12, 16]


def test_rows(n: int, split: str = "test") -> list[dict]:
    from studio.tinyworld.corpus import build_split, load_split

    try:
        rows = load_split(split)
    except FileNotFoundError:
        rows = build_split(split, 300)
    return rows[:n]


def judge_attributes(scorer, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 colour and shape index per clip (probabilities averaged over the judged frames)."""
    from studio.tinyworld.scene import COLORS, SHAPES

    frames = np.concatenate([c[[i for i in JUDGE_FRAMES if i < len(c)]] for c in clips])
    per = len(frames) // len(clips)
    pc = scorer.zero_shot(frames, [COLOR_PROMPT.format(c) for c in COLORS]).reshape(len(clips), per, -1).mean(1)
    ps = scorer.zero_shot(frames, [SHAPE_PROMPT.format(s) for s in SHAPES]).reshape(len(clips), per, -1).mean(1)
    return pc.argmax(1), ps.argmax(1)


def attribute_accuracy(rows: list[dict], color_idx: np.ndarray, shape_idx: np.ndarray) -> dict:
    from studio.tinyworld.scene import COLORS, SHAPES

    colors, shapes = list(COLORS), list(SHAPES)
    single = [i for i, r in enumerate(rows) if len(r["scene"]["objects"]) == 1]
    c_single = [colors[color_idx[i]] == rows[i]["scene"]["objects"][0]["color"] for i in single]
    s_single = [shapes[shape_idx[i]] == rows[i]["scene"]["objects"][0]["shape"] for i in single]
    c_any = [colors[color_idx[i]] in {o["color"] for o in r["scene"]["objects"]} for i, r in enumerate(rows)]
    s_any = [shapes[shape_idx[i]] in {o["shape"] for o in r["scene"]["objects"]} for i, r in enumerate(rows)]
    per_shape = {s: float(np.mean([ok for i, ok in zip(single, s_single) if rows[i]["scene"]["objects"][0]["shape"] == s]))
                 for s in shapes if any(rows[i]["scene"]["objects"][0]["shape"] == s for i in single)}
    mean = lambda x: float(np.mean(x)) if len(x) else None  # noqa: E731
    return {"single_object_n": len(single), "color_single": mean(c_single), "shape_single": mean(s_single),
            "color_any": mean(c_any), "shape_any": mean(s_any), "shape_single_by_class": per_shape}


def codec_round_trip(pipe, clips: np.ndarray, batch: int = 32) -> np.ndarray:
    """uint8 clips (N, F, H, W, 3) through the pipeline's latent codec and back (TinyWorld codec only)."""
    import torch

    out = []
    for s in range(0, len(clips), batch):
        with torch.no_grad():
            z = pipe.vae.encode(pipe.vae.frames_to_video(clips[s : s + batch]))
        out.append(pipe.decode_latents(z))
    return np.concatenate(out)


SEAM_BLOCKS = (4, 8, 16)


def seam_ratio(clips: np.ndarray | list[np.ndarray], block: int) -> float:
    """Block seams: the mean |difference| of neighbouring pixels across a ``block``-pixel grid line
    divided by the same inside the blocks (1 for a clip with no grid; renders: about 0.9-1.2)."""
    x = np.asarray(clips, dtype=np.float32)
    dx = np.abs(np.diff(x, axis=-2))  # between columns c and c+1, (..., H, W-1, 3)
    dy = np.abs(np.diff(x, axis=-3))  # between rows
    on_x = (np.arange(dx.shape[-2]) + 1) % block == 0
    on_y = (np.arange(dy.shape[-3]) + 1) % block == 0
    across = np.concatenate([dx[..., on_x, :].ravel(), dy[..., on_y, :, :].ravel()])
    inside = np.concatenate([dx[..., ~on_x, :].ravel(), dy[..., ~on_y, :, :].ravel()])
    return float(across.mean() / max(inside.mean(), 1e-6))


def seams(clips) -> dict[str, float]:
    return {f"b{b}": round(seam_ratio(clips, b), 3) for b in SEAM_BLOCKS}


def candidate_sequences(length: int) -> list[tuple[str, ...]]:
    from studio.tinyworld.corpus import OPPOSITE, SINGLE_MOVES

    if length == 1:
        return [(m,) for m in SINGLE_MOVES]
    return [s for s in itertools.permutations(SINGLE_MOVES, length) if all(OPPOSITE[a] != b for a, b in zip(s, s[1:]))]


def move_match(c2w: np.ndarray, moves: list[str], focus: float) -> tuple[bool, bool]:
    """(exact sequence closest, first move right): nearest target path by trajectory_error_deg."""
    from studio.camera import camera_trajectory
    from studio.geometry import metrics as M

    best, best_err = None, np.inf
    for seq in candidate_sequences(len(moves)):
        cmp = M.compare_trajectories(c2w, camera_trajectory(list(seq), len(c2w)), unit_length=focus)
        err = M.trajectory_error_deg(cmp)
        if err < best_err:
            best, best_err = seq, err
    return list(best) == list(moves), best[0] == moves[0]


def camera_adherence(clips: list[np.ndarray], rows: list[dict]) -> dict:
    """Camera figures over all clips, and over single-move and two-move clauses apart."""
    from studio.geometry import analyze
    from studio.rewards import trajectory_score

    per_clip = []  # (number of moves, trajectory error or None, s_traj, exact match, first move right)
    failed = 0
    for frames, row in zip(clips, rows):
        moves = row["scene"]["moves"]
        try:
            a = analyze(frames, row["prompt"], clip_scorer=None)
        except ValueError:
            failed += 1
            continue
        valid = a.depth[0][a.depth[0] > 0]
        ok_exact, ok_first = move_match(a.c2w, moves, float(np.median(valid)) if valid.size else 1.0)
        s_traj = trajectory_score(a.trajectory) if a.trajectory is not None else 0.0
        per_clip.append((len(moves), a.metrics["trajectory_error_deg"], s_traj, ok_exact, ok_first))

    def summary(recs) -> dict:
        errs = [r[1] for r in recs if r[1] is not None]
        mean = lambda x: float(np.mean(x)) if len(x) else None  # noqa: E731
        return {"n": len(recs), "trajectory_error_deg_mean": mean(errs),
                "trajectory_error_deg_median": float(np.median(errs)) if errs else None,
                "s_traj_mean": mean([r[2] for r in recs]), "move_match_exact": mean([r[3] for r in recs]),
                "move_match_first": mean([r[4] for r in recs])}

    out = {**summary(per_clip), "analysis_failed": failed}
    for k in (1, 2):
        part = [r for r in per_clip if r[0] == k]
        if part:
            out[f"{k}_move"] = summary(part)
    return out


def contact_sheet(path: Path, rows: list[dict], generated: list[np.ndarray], rendered: list[np.ndarray], scale: int = 2) -> Path:
    """One row per prompt: generated frames 0,4,8,12,16 | rendered frames 0,4,8,12,16, caption below."""
    from PIL import Image, ImageDraw

    h, w = generated[0].shape[1:3]
    cw, ch = w * scale, h * scale
    gap, text_h = 6, 12
    cols = len(JUDGE_FRAMES)
    sheet = Image.new("RGB", (2 * cols * cw + 3 * gap, len(rows) * (ch + text_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, g, ren) in enumerate(zip(rows, generated, rendered)):
        y = gap + r * (ch + text_h + gap)
        for block, clip in enumerate((g, ren)):
            x0 = gap + block * (cols * cw + gap)
            for c, f in enumerate(JUDGE_FRAMES):
                im = Image.fromarray(clip[min(f, len(clip) - 1)]).resize((cw, ch), Image.NEAREST)
                sheet.paste(im, (x0 + c * cw, y))
        objs = ", ".join(f"{o['color']} {o['shape']}" for o in row["scene"]["objects"])
        draw.text((gap, y + ch), f"{objs} | {' then '.join(row['scene']['moves'])}   [left: generated, right: render]",
                  fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tinyworld", help="tinyworld, or a pipeline directory (e.g. runs/generator/pipeline-030min)")
    ap.add_argument("--num-prompts", type=int, default=120, help="test prompts for colour/shape")
    ap.add_argument("--camera-prompts", type=int, default=60, help="test prompts analysed for camera adherence (0: skip)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--shift", type=float, default=None,
                    help="sample with this flow shift instead of the scheduler's own (more steps at high noise when larger)")
    ap.add_argument("--seed", type=int, default=0, help="offset added to each prompt's corpus seed")
    ap.add_argument("--split", default="test", choices=("test", "dynamic"),
                    help="prompts to judge: the held-out test split, or the dynamic split (unseen scenes whose "
                         "colour-shape pairs occur in training)")
    ap.add_argument("--scorer", default=None,
                    help="TinyWorld CLIP checkpoint (file or folder) to judge with instead of the shipped assets/clip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sheet-rows", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "generator_eval")
    args = ap.parse_args(argv)
    if args.shift is not None and not args.shift > 0:
        raise SystemExit(f"--shift must be > 0, got {args.shift}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from studio.pipelines import load_pipeline

    torch.set_num_threads(args.threads)
    t0 = time.time()
    rows = test_rows(args.num_prompts, args.split)
    pipe = load_pipeline(args.model)
    own_scheduler = pipe.scheduler
    if args.shift is not None:
        pipe.scheduler = type(own_scheduler).from_config(own_scheduler.config, shift=args.shift)
    try:
        return _evaluate(args, pipe, rows, t0)
    finally:
        pipe.scheduler = own_scheduler  # the loaded pipeline is cached and shared


def _evaluate(args, pipe, rows, t0) -> dict:
    from studio.scoring import load_scorer
    from studio.tinyworld.corpus import scene_of
    from studio.tinyworld.render import render_scene

    scorer = load_scorer("tinyworld", pretrained=args.scorer)
    seeds = [(r["seed"] + args.seed) % (2**31) for r in rows]

    def generate(camera_init: bool, subset: list[int]) -> list[np.ndarray]:
        return [pipe.generate(rows[i]["prompt"], seed=seeds[i], num_frames=17, height=64, width=64,
                              steps=args.steps, guidance=args.guidance, camera_init=camera_init).frames for i in subset]

    everything = list(range(len(rows)))
    gen_on = generate(True, everything)
    t_gen = time.time() - t0
    renders = [render_scene(scene_of(r), 17, 64, 64)["frames"] for r in rows]
    report: dict = {"model": args.model, "split": args.split, "scorer": args.scorer or "tinyworld", "steps": args.steps,
                    "guidance": args.guidance, "shift": pipe.flow_shift, "num_prompts": len(rows)}
    c_idx, s_idx = judge_attributes(scorer, gen_on)
    report["generated"] = attribute_accuracy(rows, c_idx, s_idx)
    c_idx, s_idx = judge_attributes(scorer, renders)
    report["renders_ceiling"] = attribute_accuracy(rows, c_idx, s_idx)
    from studio.codec import TinyWorldCodec

    report["seams"] = {"generated": seams(gen_on), "renders": seams(renders)}
    if isinstance(pipe.vae, TinyWorldCodec):
        round_trip = codec_round_trip(pipe, np.stack(renders))
        c_idx, s_idx = judge_attributes(scorer, list(round_trip))
        report["codec_ceiling"] = attribute_accuracy(rows, c_idx, s_idx)
        report["seams"]["codec_round_trip"] = seams(round_trip)
    report["generate_s_per_clip"] = t_gen / len(rows)

    if args.camera_prompts > 0:
        cam = [i for i in everything if rows[i]["scene"]["moves"] and rows[i]["scene"]["moves"] != ["fixed"]]
        cam = cam[: args.camera_prompts]
        cam_rows = [rows[i] for i in cam]
        gen_off = generate(False, cam)
        report["camera_init_on"] = camera_adherence([gen_on[i] for i in cam], cam_rows)
        report["camera_init_off"] = camera_adherence(gen_off, cam_rows)
        report["renders_camera_ceiling"] = camera_adherence([renders[i] for i in cam], cam_rows)
        c_idx, s_idx = judge_attributes(scorer, gen_off)
        report["generated_camera_init_off_subset"] = attribute_accuracy(cam_rows, c_idx, s_idx)

    n = min(args.sheet_rows, len(rows))
    sheet = contact_sheet(args.out / "contact_sheet.png", rows[:n], gen_on[:n], renders[:n])
    report["contact_sheet"] = str(sheet)
    report["wall_s"] = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "report.json", json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
