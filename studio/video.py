"""The project's one MP4 writer and video reader (PyAV, in-process), decoded video -> uint8 frames,
and depth -> colour frames for viewing.

Reading and writing run inside this process through PyAV's bundled FFmpeg libraries. Nothing here
starts an ffmpeg executable: starting one forks the server, and a fork while another thread is
inside multi-threaded OpenBLAS leaves that thread stuck for good (tests/test_video.py reproduces it).

Frames are uint8 (F, H, W, 3) RGB everywhere.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from studio.errors import UserError


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


def write_mp4(frames: np.ndarray, path: Path | str, fps: float = 8, min_side: int = 256) -> Path:
    """Write uint8 (F, H, W, 3) frames as H.264 (yuv420p, +faststart) that browsers play.

    Written to a unique temporary name beside `path`, then renamed over it: a reader never sees
    half a file and two writers of one path never share a temporary file.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames (F, H, W, 3) with F >= 1, got {frames.dtype} {frames.shape}")
    frames = upscale_for_display(frames, min_side)
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.mp4")
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            stream.options = {"crf": "16", "preset": "veryfast"}
            for f in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            out.mux(stream.encode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream, read without decoding a frame."""

    width: int
    height: int
    num_frames: int | None     # None when the container does not say (then estimated from the duration)
    fps: float | None
    duration_s: float | None
    codec: str
    container: str

    @property
    def frame_pixels(self) -> int:
        return self.width * self.height

    @property
    def frames_upper_bound(self) -> int | None:
        """The frame count, or duration x rate when only those are known, or None."""
        if self.num_frames:
            return self.num_frames
        if self.duration_s and self.fps:
            return int(np.ceil(self.duration_s * self.fps)) + 1
        return None


class VideoLimits:
    """Bounds applied before and while decoding; None = unbounded."""

    def __init__(self, max_frame_pixels: int | None = None, max_decoded_pixels: int | None = None):
        self.max_frame_pixels, self.max_decoded_pixels = max_frame_pixels, max_decoded_pixels


def _open(path: Path | str):
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    if path.stat().st_size == 0:
        raise UserError(f"{path.name} is empty (0 bytes)", fix="Upload the video again")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"could not read {path.name} as a video ({type(e).__name__})",
                        fix="Upload an MP4, WebM, MOV, MKV, AVI or GIF") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path.name} has no video stream", fix="Upload a file with video in it")
    return container


def _info(container) -> VideoInfo:
    stream = container.streams.video[0]
    cc = stream.codec_context
    fps = float(stream.average_rate) if stream.average_rate else (float(stream.guessed_rate) if stream.guessed_rate else None)
    duration = None
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    return VideoInfo(width=int(cc.width or 0), height=int(cc.height or 0), num_frames=int(stream.frames) or None,
                     fps=fps, duration_s=duration, codec=cc.name, container=container.format.name)


def probe_video(path: Path | str) -> VideoInfo:
    """Frame size, count, rate and duration from the container header (nothing is decoded)."""
    with _open(path) as container:
        return _info(container)


def fit_size(height: int, width: int, max_side: int | None, multiple_of: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """((scaled_h, scaled_w), (out_h, out_w)) for a frame brought to at most `max_side` on its long
    side with its aspect ratio kept, then centre-cropped to multiples of `multiple_of`."""
    s = min(1.0, max_side / max(height, width)) if max_side else 1.0
    sh, sw = max(1, round(height * s)), max(1, round(width * s))
    return (sh, sw), ((sh // multiple_of) * multiple_of, (sw // multiple_of) * multiple_of)


def read_video(path: Path | str, *, max_frames: int | None = None, max_side: int | None = None,
               multiple_of: int = 1, limits: VideoLimits | None = None) -> np.ndarray:
    """Decode a video into uint8 (F, H, W, 3), bounded in memory and time.

    max_frames: keep at most this many frames, evenly spaced over the clip. Frames that are not
    kept are decoded (an H.264 frame needs its references) but never converted to RGB, and decoding
    stops after the last kept frame. max_side / multiple_of: each kept frame is scaled in the
    decoder's own colour conversion (area filter) so its long side is at most max_side, then
    centre-cropped to multiples of multiple_of; a full-size RGB frame is never made. limits:
    refused before decoding when the header shows a frame or a clip over the limits; a stream that
    does not say how long it is stops with an error when the decoded pixels pass the limit.
    """
    limits = limits or VideoLimits()
    name = Path(path).name
    with _open(path) as container:
        info = _info(container)
        check_limits(info, limits, name)
        kept, decoded = _decode(container, name, info.num_frames, max_frames, max_side, multiple_of, limits)
    if max_frames and info.num_frames and decoded < info.num_frames and len(kept) < min(max_frames, decoded):
        # The header promised more frames than the stream has: space the frames over the real count.
        with _open(path) as container:
            kept, decoded = _decode(container, name, decoded, max_frames, max_side, multiple_of, limits)
    if not kept:
        raise UserError(f"{name} has no decodable frame", fix="Upload an MP4, WebM, MOV, MKV, AVI or GIF")
    frames = np.stack(kept)
    if max_frames and len(frames) > max_frames:
        frames = frames[np.linspace(0, len(frames) - 1, max_frames).round().astype(int)]
    return frames


def _decode(container, name: str, total: int | None, max_frames: int | None, max_side: int | None,
            multiple_of: int, limits: VideoLimits) -> tuple[list[np.ndarray], int]:
    """The kept frames of read_video and how many frames were decoded."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if limits.max_frame_pixels:
        # The decoder itself refuses far larger pictures (a header can understate the size); it
        # counts its padded buffers, hence the slack.
        stream.codec_context.options = {"max_pixels": str(2 * limits.max_frame_pixels)}
    wanted = None  # the frame indices to keep, when the frame count is known
    if max_frames and total:
        wanted = frozenset(np.linspace(0, total - 1, min(max_frames, total)).round().astype(int).tolist())
        last_wanted = max(wanted)
    kept: list[np.ndarray] = []
    stride = 1  # without a frame count: keep every stride-th frame, doubling it as the buffer fills
    decoded = decoded_pixels = 0
    size = None
    try:
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            decoded_pixels += frame.width * frame.height
            if limits.max_decoded_pixels and decoded_pixels > limits.max_decoded_pixels:
                raise UserError(f"{name} decodes to more than {limits.max_decoded_pixels / 1e6:,.0f} million pixels "
                                f"({decoded} frames of {frame.width}x{frame.height} so far)",
                                fix="Trim the clip or lower its resolution")
            if wanted is not None:
                if i > last_wanted:
                    break
                if i not in wanted:
                    continue
            elif max_frames and i % stride:
                continue
            if size is None:  # every kept frame gets the first one's size, even if the stream changes
                size = fit_size(frame.height, frame.width, max_side, multiple_of)
                if min(size[1]) < 1:
                    raise UserError(f"{name} is {frame.width}x{frame.height}, too small to analyse",
                                    fix="Upload a larger video")
            (sh, sw), (oh, ow) = size
            rgb = frame.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA").to_ndarray()
            y0, x0 = (sh - oh) // 2, (sw - ow) // 2
            kept.append(np.ascontiguousarray(rgb[y0:y0 + oh, x0:x0 + ow]))
            if wanted is None and max_frames and len(kept) >= 2 * max_frames:
                kept, stride = kept[::2], stride * 2
    except av.FFmpegError as e:
        if not kept:
            raise UserError(f"could not decode {name} ({type(e).__name__})",
                            fix="Upload an MP4, WebM, MOV, MKV, AVI or GIF within the size limits") from None
        # A damaged tail: the frames decoded before it are kept.
    return kept, decoded


def check_limits(info: VideoInfo, limits: VideoLimits, name: str = "the video") -> None:
    """Refuse, from the header alone, a frame or a clip that would decode past the limits."""
    if limits.max_frame_pixels and info.frame_pixels > limits.max_frame_pixels:
        raise UserError(f"{name} is {info.width}x{info.height} ({info.frame_pixels / 1e6:.1f} MP a frame); "
                        f"the limit is {limits.max_frame_pixels / 1e6:.1f} MP a frame",
                        fix="Lower its resolution (e.g. 1920x1080) and upload it again")
    bound = info.frames_upper_bound
    if limits.max_decoded_pixels and bound and info.frame_pixels * bound > limits.max_decoded_pixels:
        raise UserError(f"{name} has about {bound:,} frames of {info.width}x{info.height}, "
                        f"{info.frame_pixels * bound / 1e6:,.0f} million pixels to decode; "
                        f"the limit is {limits.max_decoded_pixels / 1e6:,.0f} million",
                        fix="Trim the clip or lower its resolution")


def read_mp4(path: Path | str) -> np.ndarray:
    """Decode a whole video into uint8 (F, H, W, 3) at its own size (trusted files: no limits)."""
    return read_video(path)


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
