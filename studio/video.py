"""Decoded video -> uint8 frames, frames -> H.264 MP4 that browsers play, and depth -> colour frames for viewing."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def decoded_to_frames(video) -> np.ndarray:
    """A decoder's float torch video in about [-1, 1], channels on axis 1 ((B, 3, F, H, W) or
    (N, 3, H, W)), -> uint8 frames with channels last, as every decoder output is shown and judged."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, *range(2, x.ndim), 1).cpu().numpy()


def upscale_for_display(frames: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour upscale by an integer factor so tiny clips are not blurred by the browser."""
    h, w = frames.shape[1:3]
    k = max(1, int(np.ceil(min_side / min(h, w))))
    return frames.repeat(k, axis=1).repeat(k, axis=2) if k > 1 else frames


def write_mp4(frames: np.ndarray, path: Path | str, fps: int = 8, min_side: int = 256) -> Path:
    """Write uint8 (F, H, W, 3) frames as H.264 (yuv420p), written to a temp name then renamed."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (F, H, W, 3), got {frames.dtype} {frames.shape}")
    frames = upscale_for_display(frames, min_side)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1,
                            ffmpeg_params=["-crf", "16", "-preset", "veryfast"], ffmpeg_log_level="error") as w_:
        for f in frames:
            w_.append_data(f)
    tmp.replace(path)
    return path


def read_mp4(path: Path | str) -> np.ndarray:
    """Decode an MP4 into uint8 (F, H, W, 3)."""
    import imageio.v2 as imageio

    with imageio.get_reader(str(path)) as r:
        return np.stack([np.asarray(f)[..., :3] for f in r])


def colorize_depth(depth: np.ndarray, invalid: float = 0.0) -> np.ndarray:
    """Depth (F, H, W) -> uint8 turbo colours, near = warm; one scale for the whole clip."""
    import cv2

    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > invalid)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    inv = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    lo, hi = np.percentile(inv[valid], [2, 98])
    norm = np.clip((inv - lo) / max(hi - lo, 1e-6), 0, 1)
    out = np.stack([cv2.applyColorMap((n * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1] for n in norm])
    out[~valid] = 0
    return out
