"""Seconds per Flow-GRPO epoch and where they go: rollout, decode, rewards, backward.

    python -m benchmarks.bench_train [--preset tinyworld-cpu] [--epochs 3] [--threads 1] [key=value ...]

Rewards run in a worker thread while the next batch rolls out, so the table shows both the
reward compute time (in the worker) and how long the main thread actually waited for it; the
difference is the reward time hidden behind rollouts. With the shipped TinyWorld generator, CLIP
scorer and geometry engine present it times the real thing; otherwise (or with --stand-in) it says
so and uses a stand-in of the same size: the TinyWorld generator's architecture with random weights
(training.standin) and a numpy phase-correlation camera reward.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _real_parts_available() -> tuple[bool, str]:
    missing = []
    if not (REPO / "assets" / "generator" / "model_index.json").is_file():
        missing.append("assets/generator (TinyWorld generator)")
    if not (REPO / "assets" / "clip" / "tinyworld.safetensors").is_file():
        missing.append("assets/clip (CLIP scorer)")
    try:
        from studio.geometry import analyze  # noqa: F401
    except ImportError:
        missing.append("studio.geometry.analyze")
    return not missing, ", ".join(missing)


def phase_shift_reward(prompts, clips, **_):
    """Stand-in camera reward: mean |horizontal shift| between consecutive frames by phase correlation."""
    out = []
    for clip in clips:
        gray = clip.astype(np.float32).mean(-1)
        f = np.fft.rfft2(gray - gray.mean(axis=(1, 2), keepdims=True))
        cross = f[1:] * np.conj(f[:-1])
        corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-6), s=gray.shape[1:])
        peak = corr.reshape(len(corr), -1).argmax(1) % gray.shape[2]
        shift = np.where(peak > gray.shape[2] // 2, peak - gray.shape[2], peak)
        out.append(float(np.abs(shift).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tinyworld-cpu")
    ap.add_argument("--epochs", type=int, default=3, help="epochs timed after one warm-up epoch")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    ap.add_argument("--stand-in", action="store_true", help="use the stand-in model and reward even if the real ones exist")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="summarise the split of an existing run folder's metrics.jsonl instead of training")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    if args.from_run is not None:
        from training.config import from_dict

        cfg = from_dict(json.loads((args.from_run / "config.json").read_text()))
        records = [json.loads(line) for line in (args.from_run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        print(f"run {args.from_run}: {len(records)} records")
        report_split(cfg, records, cfg.torch_threads)
        return 0

    import torch

    from training.config import apply_overrides, get_preset
    from training.train import train

    torch.set_num_threads(args.threads)
    cfg = apply_overrides(get_preset(args.preset), args.overrides)
    cfg.epochs, cfg.max_minutes, cfg.num_eval_clips, cfg.save_every = args.epochs + 1, 0.0, 0, 10**9
    real, missing = _real_parts_available()
    pipeline = rewards = None
    if args.stand_in or not real:
        from studio.rewards import RewardSet
        from training.standin import random_generator

        print(f"stand-in model and reward ({'requested' if args.stand_in else 'missing: ' + missing})")
        pipeline = random_generator
        rewards = RewardSet({"phase_shift": phase_shift_reward}, {"phase_shift": 1.0})
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", pipeline=pipeline, rewards=rewards, progress=False)
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    report_split(cfg, records, args.threads)
    return 0


def report_split(cfg, records: list[dict], threads: int, show_epochs: int = 12) -> None:
    """Per-epoch table (the first epoch is warm-up and dropped; long runs show the last epochs) and means."""
    by_epoch: dict[int, dict] = {}
    for r in records:
        if not r.get("eval"):
            by_epoch[r["epoch"]] = r  # time/* are per epoch, repeated on each of its steps
    rows = [by_epoch[e] for e in sorted(by_epoch)][1:]  # drop the warm-up epoch
    seconds = np.diff([by_epoch[e]["seconds"] for e in sorted(by_epoch)])
    cols = ["rollout", "decode", "rewards", "rewards_wait", "train"]
    print(f"preset {cfg.preset}: {cfg.per_device_batch_size * cfg.num_batches_per_epoch} samples/epoch "
          f"(K = {cfg.group_size}), {cfg.num_steps} steps, {cfg.trained_step_count()} trained, "
          f"{cfg.steps_per_epoch} optimizer steps/epoch, torch threads {threads}")
    print(f"{'epoch':>5} {'total':>7} " + " ".join(f"{c:>12}" for c in cols) + f" {'hidden':>8}")
    for r, total in list(zip(rows, seconds))[-show_epochs:]:
        hidden = r["time/rewards"] - r["time/rewards_wait"]
        print(f"{r['epoch']:>5} {total:7.2f} " + " ".join(f"{r['time/' + c]:12.2f}" for c in cols) + f" {hidden:8.2f}")
    mean = {c: float(np.mean([r["time/" + c] for r in rows])) for c in cols}
    hidden = mean["rewards"] - mean["rewards_wait"]
    print(f" mean {np.mean(seconds):7.2f} " + " ".join(f"{mean[c]:12.2f}" for c in cols) + f" {hidden:8.2f}")
    print("rewards = compute time in the reward thread; rewards_wait = main thread blocked on it after the last "
          "rollout; hidden = rewards − rewards_wait, the reward time overlapped with rollouts; train = forward + backward + step")


if __name__ == "__main__":
    sys.exit(main())
