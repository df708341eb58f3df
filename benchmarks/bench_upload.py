"""Peak memory and time of the upload analysis (decode + analyze + files) on the worst uploads the
limits in studio/uploads.py allow, each in a fresh process (as the studio's worker runs it).

Cases: the most 4K frames the decoded-pixel budget allows; the most square frames (2160x2160, so the
analysis runs at its largest, 128x128) the budget allows; 2,000 black 640x480 frames (the issue's
case: 3.6 GB added while decoding before); a 617 KB-class 1920x1080x60 clip; an animated GIF.

Usage: python -m benchmarks.bench_upload [--cases square 4k ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the studio's worker runs

from studio import uploads  # noqa: E402

PROMPT = "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor."


def scene_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A TinyWorld orbit rendered small and scaled up (nearest): real texture and motion, cheap to encode."""
    from studio.tinyworld import render_clip

    k = 8
    clip = render_clip(PROMPT, num_frames=min(num_frames, 257), height=max(8, height // k // 2 * 2),
                       width=max(8, width // k // 2 * 2), seed=seed).frames
    idx = np.arange(num_frames) % len(clip)
    return clip[idx]  # small; scaled per frame while encoding


def encode(path: Path, small: np.ndarray, height: int, width: int, fps: int = 30, codec: str = "libx264") -> Path:
    """Encode frames scaled to height x width (fast settings; file size is not the point)."""
    import av
    import cv2

    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height = width, height
        s.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "crf": "28"}
        for f in small:
            big = cv2.resize(f, (width, height), interpolation=cv2.INTER_NEAREST) if f.shape[:2] != (height, width) else f
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(big), format="rgb24")))
        out.mux(s.encode())
    return path


def make_case(name: str, folder: Path) -> Path:
    """Write one benchmark/stress clip into folder; returns its path."""
    budget = uploads.MAX_DECODED_PIXELS
    if name == "4k":  # the most 4K frames the budget allows
        n = budget // (3840 * 2160)
        return encode(folder / "4k.mp4", scene_frames(n, 3840, 2160), 2160, 3840)
    if name == "square":  # the largest analysis (128x128), the most frames the budget allows
        n = budget // (2160 * 2160)
        return encode(folder / "square.mp4", scene_frames(n, 2160, 2160), 2160, 2160)
    if name == "black2000":
        return encode(folder / "black2000.mp4", np.zeros((2000, 480, 640, 3), np.uint8), 480, 640)
    if name == "hd60":
        return encode(folder / "hd60.mp4", scene_frames(60, 1080, 1920), 1080, 1920)
    if name == "gif":
        return encode(folder / "clip.gif", scene_frames(100, 240, 320), 240, 320, fps=10, codec="gif")
    raise ValueError(f"unknown case {name!r}")


CASES = ("4k", "square", "black2000", "hd60", "gif")


def peak_rss_bytes() -> int:
    """This process's resident high-water mark (VmHWM: ru_maxrss would include the parent's peak before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run(path: str, out_dir: str, queue) -> None:
    start = time.perf_counter()
    try:
        r = uploads.analyze_upload(path, PROMPT, out_dir)
        result = f"ok, {r['metrics']['frames_analysed']}" + (f", degenerate: {r['degenerate'][:20]}" if r["degenerate"] else "")
    except Exception as e:  # noqa: BLE001 - reported in the table
        result = f"refused: {e}"[:90]
    queue.put((time.perf_counter() - start, peak_rss_bytes(), result))


def measure(path: Path, out_dir: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS bytes, outcome) of analyze_upload in a fresh spawned process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(str(path), str(out_dir), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def baseline_rss() -> int:
    """Peak RSS of a fresh process that imported what the analysis imports and loaded its nets."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_idle, args=(queue,))
    proc.start()
    rss = queue.get()
    proc.join()
    return rss


def _idle(queue) -> None:
    from studio.geometry import _estimator

    _estimator("tinyworld", None, None, None)
    import open3d  # noqa: F401
    import studio.plots  # noqa: F401

    queue.put(peak_rss_bytes())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--keep", type=Path, help="write the clips here and keep them")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-upload-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; limits: "
          f"{uploads.MAX_FRAME_PIXELS / 1e6:.1f} MP a frame, {uploads.MAX_DECODED_PIXELS / 1e9:.1f} G pixels decoded, "
          f"{uploads.MAX_UPLOAD_FRAMES} frames at <= {uploads.ANALYSIS_MAX_SIDE} px analysed")
    print(f"process with the analysis's imports and nets loaded, idle: peak RSS {baseline_rss() / 2**20:.0f} MiB\n")
    print("| upload | file | decode + analysis + files | peak RSS | outcome |")
    print("|---|---|---|---|---|")
    try:
        for name in args.cases:
            path = make_case(name, folder)
            from studio.video import probe_video

            info = probe_video(path)
            seconds, rss, outcome = measure(path, folder / f"out-{name}")
            print(f"| {name}: {info.width}x{info.height}x{info.num_frames or '?'} | {path.stat().st_size / 2**20:.1f} MiB "
                  f"| {seconds:.1f} s | {rss / 2**20:.0f} MiB | {outcome} |", flush=True)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
