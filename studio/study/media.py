"""MP4 reading/writing for the study: attention-check copies and a synthetic clip generator.

Frames follow the project convention: uint8 (F, H, W, 3) RGB. Clips are written as
h264/yuv420p with `+faststart`, which browsers (and gr.Video) play without conversion.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def write_mp4(frames: np.ndarray, path: Path, fps: float = 8.0) -> None:
    """Write uint8 (F, H, W, 3) frames; H and W should be multiples of 16 (h264 macroblocks)."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (F, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=16, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )
    try:
        for frame in frames:
            writer.append_data(frame)
    finally:
        writer.close()


def read_mp4(path: Path) -> tuple[np.ndarray, float]:
    """Return (frames uint8 (F, H, W, 3), fps)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(Path(path), format="FFMPEG")
    try:
        fps = float(reader.get_meta_data().get("fps", 8.0))
        frames = np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
    return frames, fps


def shuffled_order(num_frames: int, seed: int) -> np.ndarray:
    """A frame permutation that leaves at most a quarter of frames in place.

    A random permutation of a short clip can be nearly the identity; the attention check
    needs a clip whose motion is visibly broken.
    """
    if num_frames < 2:
        raise ValueError("a clip needs at least 2 frames to be shuffled")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        order = rng.permutation(num_frames)
        if np.sum(order == np.arange(num_frames)) <= num_frames // 4:
            return order
    return np.roll(np.arange(num_frames), 1)


def write_shuffled_copy(src: Path, dst: Path, seed: int) -> None:
    """Write `dst`: the frames of `src` in a shuffled order (same fps), atomically."""
    frames, fps = read_mp4(src)
    tmp = Path(dst).with_name(Path(dst).stem + ".partial.mp4")
    write_mp4(frames[shuffled_order(len(frames), seed)], tmp, fps=fps)
    os.replace(tmp, dst)


def synthetic_clip(system: str, prompt: str, seed: int, num_frames: int = 16, size: int = 32) -> np.ndarray:
    """A deterministic clip for tests and the load script: a square drifting over a tinted
    background, so frame order matters (a shuffled copy visibly jumps)."""
    digest = hashlib.sha256(f"{system}|{prompt}|{seed}".encode()).digest()
    background = np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32) * 0.5 + 32
    square = 255 - background
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    side = size // 4
    for f in range(num_frames):
        frame = np.broadcast_to(background, (size, size, 3)).copy()
        x = int(round(f * (size - side) / max(num_frames - 1, 1)))
        y = (size - side) // 2
        frame[y : y + side, x : x + side] = square
        frames[f] = frame
    return frames


def generate_synthetic(system: str, prompt: str, seed: int, out_path: Path) -> None:
    """`GenerateFn` that writes `synthetic_clip` as an MP4 (tests, load script)."""
    write_mp4(synthetic_clip(system, prompt, seed), out_path)
