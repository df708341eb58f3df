"""Renderer speed: seconds per 17-frame clip at 64x64 and 128x128 (targets 0.1 s and 0.4 s).

Prints medians over several prompts and seeds, warm (first call excluded), plus the ratio to target.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from studio.tinyworld import render_clip
from studio.tinyworld.corpus import load_split

TARGETS = {64: 0.1, 128: 0.4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = load_split("test")[: args.clips]
    render_clip(rows[0]["prompt"])  # warm-up
    print(f"{'size':>8} {'median s':>9} {'p90 s':>7} {'target s':>9} {'ratio':>6}")
    for size, target in TARGETS.items():
        times = []
        for r in rows:
            t = time.perf_counter()
            render_clip(r["prompt"], num_frames=17, height=size, width=size, seed=r["seed"])
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{size}x{size:<4} {med:9.3f} {p90:7.3f} {target:9.2f} {med / target:6.2f}")


if __name__ == "__main__":
    main()
