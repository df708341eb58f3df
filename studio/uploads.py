"""Analysis of an uploaded clip, bounded before any heavy work: check the upload -> read at most
the analysed frames, small -> analyze -> files.

Limits, and why: the header is read first, and a clip is refused when one frame or the whole clip
would decode past the limits, before a frame is decoded. At most MAX_UPLOAD_FRAMES frames, evenly
spaced, are kept, each scaled by the decoder to at most ANALYSIS_MAX_SIDE pixels on its long side
(aspect kept, centre-cropped to multiples of 16 for the depth nets). So the analysis itself never
sees more than 129 frames of 128x128, whatever was uploaded, and decoding is bounded by
MAX_DECODED_PIXELS. benchmarks/bench_upload.py measures the worst upload these limits allow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.errors import UserError
from studio.rewards import with_trajectory_score
from studio.video import VideoInfo, VideoLimits, check_limits, fit_size, probe_video, read_video

UPLOAD_FIELD = "Clip to analyse"
PROMPT_FIELD = "Its prompt"
UPLOAD_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
FORMATS_TEXT = "MP4, WebM, MOV, MKV, AVI or GIF"
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
MAX_UPLOAD_FRAMES = 129                  # frames analysed, evenly spaced over the clip
MAX_FRAME_PIXELS = 3840 * 2160           # one frame (4K UHD)
MAX_DECODED_PIXELS = 1_500_000_000       # the whole clip: ~720 frames of 1080p, ~4,900 of 640x480
ANALYSIS_MAX_SIDE = 128                  # long side of the analysed frames
ANALYSIS_MULTIPLE = 16                   # the depth nets' stride
MIN_ANALYSIS_SIDE = 32
MAX_ASPECT = 4.0
MAX_PROMPT_CHARS = 2000
LIMITS = VideoLimits(max_frame_pixels=MAX_FRAME_PIXELS, max_decoded_pixels=MAX_DECODED_PIXELS)


def check_upload(video_path: str | Path | None, prompt: str | None = None) -> tuple[Path, VideoInfo, str | None]:
    """Everything that can be judged without decoding: (path, header, prompt). UserError naming the field."""
    if not video_path:
        raise UserError(f"upload a video ({FORMATS_TEXT}) to analyse", field=UPLOAD_FIELD)
    path = Path(video_path)
    if not path.is_file():
        raise FileNotFoundError(2, "uploaded file not found", path.name)
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path.name} is empty (0 bytes)", field=UPLOAD_FIELD, fix="Upload the video again")
    if size > MAX_UPLOAD_BYTES:
        raise UserError(f"the video is {size / 2**20:.0f} MiB, larger than {MAX_UPLOAD_BYTES // 2**20} MiB",
                        field=UPLOAD_FIELD, fix="Trim or compress it")
    if prompt is not None and not isinstance(prompt, str):
        raise UserError(f"expected text, got {type(prompt).__name__}", field=PROMPT_FIELD)
    prompt = (prompt or "").strip() or None
    if prompt and len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"{len(prompt)} characters; at most {MAX_PROMPT_CHARS}", field=PROMPT_FIELD,
                        fix="Shorten it to its camera clause and scene")
    info = _field(probe_video, path)
    if info.width and info.height:
        _check_size(info.height, info.width, path.name)
    _field(check_limits, info, LIMITS, path.name)
    return path, info, prompt


def _field(fn, *args):
    """Call fn; a UserError from the video layer is re-raised naming the upload field."""
    try:
        return fn(*args)
    except UserError as e:
        if e.field:
            raise
        raise UserError(str(e), field=UPLOAD_FIELD) from None


def _check_size(height: int, width: int, name: str) -> None:
    if max(height, width) / max(min(height, width), 1) > MAX_ASPECT:
        raise UserError(f"{name} is {width}x{height}; the analysis needs an aspect ratio within {MAX_ASPECT:g}:1",
                        field=UPLOAD_FIELD, fix="Crop it closer to 16:9 or 4:3")
    _, (h, w) = fit_size(height, width, ANALYSIS_MAX_SIDE, ANALYSIS_MULTIPLE)
    if h < MIN_ANALYSIS_SIDE or w < MIN_ANALYSIS_SIDE:
        raise UserError(f"{name} is {width}x{height}; the analysis needs at least "
                        f"{MIN_ANALYSIS_SIDE}x{MIN_ANALYSIS_SIDE} pixels", field=UPLOAD_FIELD,
                        fix="Upload a larger video")


def load_upload(path: Path) -> np.ndarray:
    """The analysed frames: uint8 (F, H, W, 3), F in [2, MAX_UPLOAD_FRAMES], H, W multiples of 16 <= 128."""
    frames = _field(lambda: read_video(path, max_frames=MAX_UPLOAD_FRAMES, max_side=ANALYSIS_MAX_SIDE,
                                       multiple_of=ANALYSIS_MULTIPLE, limits=LIMITS))
    if len(frames) < 2:
        raise UserError(f"the video has {len(frames)} frame(s); the analysis needs at least 2", field=UPLOAD_FIELD,
                        fix="Upload a clip, not a still image")
    if min(frames.shape[1:3]) < MIN_ANALYSIS_SIDE:
        raise UserError(f"the video's frames are {frames.shape[2]}x{frames.shape[1]} after scaling; the analysis "
                        f"needs at least {MIN_ANALYSIS_SIDE}x{MIN_ANALYSIS_SIDE} pixels", field=UPLOAD_FIELD,
                        fix="Upload a larger video")
    return frames


def analyze_upload(video_path: str | Path | None, prompt: str | None, out_dir: str | Path,
                   estimator: str = "tinyworld") -> dict:
    """3D analysis of an uploaded clip: {"metrics", "files", "figure", "frames_analysed", "degenerate"}.

    Files (depth MP4, GLB, PLY) are written to out_dir. Bad uploads raise UserError naming the field.
    """
    from studio.geometry import analyze
    from studio.plots import trajectory_figure
    from studio.video import colorize_depth, write_mp4

    path, info, prompt = check_upload(video_path, prompt)
    frames = load_upload(path)
    analysis = analyze(frames, prompt, estimator=estimator)
    out = Path(out_dir)
    files = {"depth_video": str(write_mp4(colorize_depth(analysis.depth), out / "depth.mp4")),
             "glb": str(analysis.write_glb(out / "points.glb")), "ply": str(analysis.write_ply(out / "points.ply"))}
    fig = trajectory_figure({"estimated": analysis.c2w}, title="Estimated camera path")
    metrics = with_trajectory_score(analysis)
    metrics["degenerate"] = analysis.degenerate
    metrics["frames_analysed"] = f"{len(frames)} of {info.frames_upper_bound or '?'} at {frames.shape[2]}x{frames.shape[1]}"
    return {"metrics": metrics, "files": files, "figure": fig, "degenerate": analysis.degenerate,
            "warnings": list(analysis.warnings)}
