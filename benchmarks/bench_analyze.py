"""Time studio.geometry.analyze per stage on TinyWorld clips (17 frames, 64x64 and 128x128).

Targets (issue 3): 17x64x64 <= 1.0 s, 17x128x128 <= 3 s on the 2-core machine. Prints the median
of warm runs per stage as wall / process-CPU seconds (CPU is what the code costs when it has the
cores to itself) and the load average (other processes on shared cores stretch wall time).

Usage: python benchmarks/bench_analyze.py [--repeats 5] [--estimators ground-truth tinyworld]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from studio.geometry import STAGES, analyze  # noqa: E402
from studio.tinyworld import render_clip  # noqa: E402

PROMPT = "a red cube and a blue sphere on a checker floor. Camera orbit left, then push in."
LIMITS = {64: 1.0, 128: 3.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--estimators", nargs="+", default=["ground-truth", "tinyworld"])
    ap.add_argument("--clip-scorer", default=None, help='e.g. "tinyworld" to include clip_score in the metrics stage')
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("Per stage: median wall s / median process-CPU s over the warm runs.\n")
    print("| estimator | size | " + " | ".join(STAGES) + " | total wall | total CPU | limit (wall) |")
    print("|---|---|" + "---|" * len(STAGES) + "---|---|---|")
    over = 0
    for est in args.estimators:
        for size in args.sizes:
            clip = render_clip(PROMPT, height=size, width=size, seed=0)
            kw = dict(depth=clip.depth, K=clip.K) if est == "ground-truth" else dict(K=clip.K)
            try:
                analyze(clip.frames, PROMPT, est, clip_scorer=args.clip_scorer, **kw)  # warm: imports, weights
            except RuntimeError as e:
                print(f"| {est} | {size} | skipped: {e} |")
                break
            runs = [analyze(clip.frames, PROMPT, est, clip_scorer=args.clip_scorer, **kw) for _ in range(args.repeats)]
            wall = {k: float(np.median([r.timings[k] for r in runs])) for k in (*STAGES, "total")}
            cpu = {k: float(np.median([r.cpu_timings[k] for r in runs])) for k in (*STAGES, "total")}
            over += wall["total"] > LIMITS.get(size, np.inf)
            print(f"| {est} | {size}x{size} | " + " | ".join(f"{wall[s]:.3f} / {cpu[s]:.3f}" for s in STAGES)
                  + f" | {wall['total']:.3f} | {cpu['total']:.3f} | {LIMITS.get(size, float('nan')):.1f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0 if over == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
