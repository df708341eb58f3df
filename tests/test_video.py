"""studio.video: the one MP4 writer/reader, in-process (PyAV), bounded before and while decoding."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from studio.errors import UserError
from studio.video import VideoLimits, fit_size, probe_video, read_video, write_mp4

ROOT = Path(__file__).resolve().parents[1]


def moving_square(num_frames=12, h=48, w=64):
    frames = np.full((num_frames, h, w, 3), 40, np.uint8)
    for i in range(num_frames):
        frames[i, 8:24, 2 + 3 * i:18 + 3 * i] = (220, 60, 30)
    return frames


def write_gif(path, frames, fps=10):
    import av

    with av.open(str(path), "w", format="gif") as out:
        s = out.add_stream("gif", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "rgb8"
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    return path


def test_mp4_round_trip_keeps_frames_and_size(tmp_path):
    frames = moving_square()
    path = write_mp4(frames, tmp_path / "a.mp4", fps=8, min_side=1)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 12, 8.0)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 3
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed, not left behind


def test_reading_keeps_evenly_spaced_frames_scaled_and_cropped(tmp_path):
    frames = moving_square(30, 96, 160)
    path = write_mp4(frames, tmp_path / "a.mp4", min_side=1)
    small = read_video(path, max_frames=5, max_side=64, multiple_of=16)
    # 160x96 -> 64x38 (aspect kept) -> 64x32 (centre crop to multiples of 16)
    assert small.shape == (5, 32, 64, 3)
    assert fit_size(1080, 1920, 128, 16) == ((72, 128), (64, 128))
    full = read_video(path)
    for k, idx in enumerate(np.linspace(0, 29, 5).round().astype(int)):  # the same frames, evenly spaced
        import cv2

        ref = cv2.resize(full[idx], (64, 38), interpolation=cv2.INTER_AREA)[3:35]
        assert np.abs(small[k].astype(int) - ref).mean() < 6


def test_gif_is_read_like_a_video(tmp_path):
    frames = moving_square(6)
    path = write_gif(tmp_path / "a.gif", frames)
    assert probe_video(path).num_frames == 6
    back = read_video(path, max_frames=3)
    assert back.shape == (3, 48, 64, 3)
    def blocks(f):  # GIF's 3-3-2 palette dithers: compare 8x8 block means
        return f.reshape(6, 8, 8, 8, 3).mean(axis=(1, 3))

    assert np.abs(blocks(back[0]) - blocks(frames[0])).mean() < 8
    assert np.abs(blocks(back[2]) - blocks(frames[5])).mean() < 8


def test_limits_refuse_from_the_header_before_decoding(tmp_path):
    path = write_mp4(moving_square(20, 64, 96), tmp_path / "a.mp4", min_side=1)
    with pytest.raises(UserError, match="a frame"):
        read_video(path, limits=VideoLimits(max_frame_pixels=64 * 96 - 1))
    with pytest.raises(UserError, match="million pixels to decode"):
        read_video(path, limits=VideoLimits(max_decoded_pixels=64 * 96 * 19))
    assert len(read_video(path, limits=VideoLimits(64 * 96, 64 * 96 * 20))) == 20


def test_a_stream_without_a_frame_count_stops_at_the_pixel_budget(tmp_path):
    import av

    # A WebM written frame by frame carries no frame count in its header.
    path = tmp_path / "a.webm"
    with av.open(str(path), "w", format="webm") as out:
        s = out.add_stream("libvpx", rate=8)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in moving_square(40):
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())
    info = probe_video(path)
    assert len(read_video(path, max_frames=7)) == 7
    if info.frames_upper_bound is None:
        with pytest.raises(UserError, match="decodes to more than"):
            read_video(path, limits=VideoLimits(max_decoded_pixels=64 * 48 * 10))
    else:  # the duration gave it away: refused up front
        with pytest.raises(UserError, match="to decode"):
            read_video(path, limits=VideoLimits(max_decoded_pixels=64 * 48 * 10))


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"\x00" * 5000, "could not read"),
                                            (b"GIF89a" + b"\xff" * 200, "could not")])
def test_broken_files_are_user_errors(tmp_path, content, match):
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        read_video(path)


def test_a_truncated_mp4_keeps_what_decodes_or_says_it_cannot(tmp_path):
    path = write_mp4(moving_square(16), tmp_path / "a.mp4", min_side=1)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames = read_video(cut)
    except UserError:
        return
    assert 1 <= len(frames) <= 16


BLAS_WHILE_WRITING = textwrap.dedent("""
    import os, sys, threading, time
    os.environ["OPENBLAS_NUM_THREADS"] = "2"   # the server's setting before the fix: worker threads
    import numpy as np
    from studio.video import write_mp4, read_video
    done = [0]
    def blas():
        a = np.random.default_rng(0).standard_normal((200, 200))
        while True:
            np.linalg.solve(a @ a.T + np.eye(200), a)
            done[0] += 1
    threading.Thread(target=blas, daemon=True).start()
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    t0 = time.time(); writes = 0
    while time.time() - t0 < 4:
        write_mp4(frames, sys.argv[1], min_side=1); read_video(sys.argv[1]); writes += 1
    before = done[0]; time.sleep(1.0)
    print("progress", done[0] - before, "writes", writes, flush=True)
    os._exit(0 if done[0] > before else 3)
""")


def test_writing_video_never_forks_under_a_thread_doing_linear_algebra(tmp_path):
    """imageio-ffmpeg started ffmpeg with a real fork: OpenBLAS's fork handler then left a thread
    inside np.linalg stuck for good (reproduced in about 5 s before the fix). PyAV writes in-process."""
    script = tmp_path / "blas.py"
    script.write_text(BLAS_WHILE_WRITING)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "a.mp4")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr


FORK_WHILE_BLAS = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    import app  # noqa: F401 - the server's settings, before numpy
    import numpy as np
    done = [0]
    def blas():
        a = np.random.default_rng(0).standard_normal((200, 200))
        while True:
            np.linalg.solve(a @ a.T + np.eye(200), a)
            done[0] += 1
    threading.Thread(target=blas, daemon=True).start()
    t0 = time.time()
    while time.time() - t0 < 4:  # what imageio-ffmpeg does to start ffmpeg: a real fork (preexec_fn)
        subprocess.run(["true"], preexec_fn=os.setpgrp)
    before = done[0]; time.sleep(1.0)
    print("progress", done[0] - before, flush=True)
    os._exit(0 if done[0] > before else 3)
""")


def test_the_server_survives_any_library_forking_while_a_request_does_linear_algebra(tmp_path):
    """Other code in the server (the study's media, diffusers' export) may still start ffmpeg with a
    fork; app.py runs one BLAS thread, so OpenBLAS has no worker thread to lose."""
    script = tmp_path / "fork.py"
    script.write_text(FORK_WHILE_BLAS)
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
