"""'Analyse your own clip': uploads are bounded before decoding, GIFs are accepted where the message
says so, the analysis runs in a worker with a hard time limit, and its files stay in a bounded
cache under the data dir."""

import os
import tempfile
import time

import numpy as np
import pytest

import studio.uploads as uploads
from studio.errors import RequestTimeout, UserError
from studio.ui.analyze_section import analysis_dir, build_analyze_section, run_analyze
from studio.uploads import ANALYSIS_MAX_SIDE, MAX_UPLOAD_FRAMES, load_upload
from studio.video import write_mp4
from studio.worker import Worker, WorkerMemoryError

PROMPT = "Camera orbit left. A green cone on a tiled floor."


def encode(path, frames, fps=8, codec="libx264"):
    """Write frames as they are (write_mp4 would upscale tiny ones), fast settings."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(s.encode())
    return path


def orbit_frames(num_frames=9, size=64):
    from studio.tinyworld import render_clip

    return render_clip(PROMPT, num_frames=num_frames, height=size, width=size, seed=2).frames


def test_the_upload_field_accepts_every_format_its_label_names():
    import gradio as gr

    with gr.Blocks() as demo:
        build_analyze_section("unused")
    upload = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "analyze-upload")
    assert isinstance(upload, gr.File)  # gr.Video's browser picker takes video/* only: no GIF
    for suffix in (".mp4", ".webm", ".mov", ".gif"):
        assert suffix in upload.file_types
        assert suffix[1:].upper().replace("WEBM", "WebM") in upload.label


def test_a_gif_is_analysed(tmp_path):
    path = encode(tmp_path / "orbit.gif", orbit_frames(), codec="gif")
    r = run_analyze(str(path), PROMPT, data_dir=tmp_path)
    assert r["metrics"]["trajectory_error_deg"] is not None and r["degenerate"] is None
    assert os.path.isfile(r["files"]["glb"])


def test_a_huge_frame_is_refused_from_the_header_before_any_decoding(tmp_path, monkeypatch):
    path = encode(tmp_path / "huge.mp4", np.zeros((2, 2176, 3968, 3), np.uint8))
    monkeypatch.setattr(uploads, "read_video", lambda *a, **k: pytest.fail("decoded a refused upload"))
    with pytest.raises(UserError, match="Clip to analyse: huge.mp4 is 3968x2176 .* the limit is 8.3 MP"):
        run_analyze(str(path), None, data_dir=tmp_path)


def test_a_long_clip_is_refused_when_it_would_decode_past_the_pixel_budget(tmp_path, monkeypatch):
    path = encode(tmp_path / "long.mp4", np.zeros((40, 64, 64, 3), np.uint8))
    monkeypatch.setattr(uploads.LIMITS, "max_decoded_pixels", 64 * 64 * 39)
    monkeypatch.setattr(uploads, "read_video", lambda *a, **k: pytest.fail("decoded a refused upload"))
    with pytest.raises(UserError, match="40 frames of 64x64"):
        run_analyze(str(path), None, data_dir=tmp_path)


def test_only_the_analysed_frames_are_kept_and_at_most_128_px(tmp_path):
    frames = np.repeat(orbit_frames(3, 64), 100, axis=0)        # 300 frames
    assert load_upload(encode(tmp_path / "long.mp4", frames)).shape == (MAX_UPLOAD_FRAMES, 64, 64, 3)
    hd = np.zeros((4, 1080, 1920, 3), np.uint8)
    hd[:, 200:800, 300:1500] = 200
    small = load_upload(encode(tmp_path / "hd.mp4", hd))
    assert small.shape == (4, 64, ANALYSIS_MAX_SIDE, 3)         # 1920x1080 -> 128x72 -> cropped to 128x64


def test_extreme_aspect_ratios_and_long_prompts_name_their_field(tmp_path):
    path = encode(tmp_path / "thin.mp4", np.zeros((2, 32, 256, 3), np.uint8))
    with pytest.raises(UserError, match="^Clip to analyse: .*aspect ratio"):
        run_analyze(str(path), None, data_dir=tmp_path)
    ok = encode(tmp_path / "ok.mp4", np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="^Its prompt: 2001 characters"):
        run_analyze(str(ok), "x" * 2001, data_dir=tmp_path)


def test_files_go_to_a_bounded_cache_named_by_the_upload_not_to_the_temp_dir(tmp_path):
    path = write_mp4(orbit_frames(), tmp_path / "orbit.mp4", min_side=64)
    before = set(os.listdir(tempfile.gettempdir()))
    r = run_analyze(str(path), PROMPT, data_dir=tmp_path / "data")
    assert {p for p in set(os.listdir(tempfile.gettempdir())) - before if p.startswith("analyze-")} == set()
    folder = analysis_dir(tmp_path / "data", path, PROMPT, "tinyworld")
    assert os.path.dirname(r["files"]["glb"]) == str(folder)
    assert folder.parent == tmp_path / "data" / "compare" / "uploads"
    assert analysis_dir(tmp_path / "data", path, PROMPT + " ", "tinyworld") == folder  # prompt stripped
    assert analysis_dir(tmp_path / "data", path, "Camera pan left.", "tinyworld") != folder


def test_the_studio_runs_the_analysis_in_a_worker_and_stops_it_at_the_time_limit(tmp_path):
    path = write_mp4(orbit_frames(), tmp_path / "orbit.mp4", min_side=64)
    worker = Worker("analysis")
    try:
        r = run_analyze(str(path), PROMPT, data_dir=tmp_path, worker=worker, timeout_s=300)
        assert r["metrics"]["depth_consistency_l1"] < 0.2 and os.path.isfile(r["files"]["depth_video"])
        first = worker._proc.pid
        start = time.monotonic()
        with pytest.raises(RequestTimeout, match="took longer than 1 s and was stopped"):
            worker.call(time.sleep, 60, timeout_s=1)
        assert time.monotonic() - start < 10 and worker._proc is None
        assert worker.call(os.getpid, timeout_s=120) != first  # a fresh process after the kill
        with pytest.raises(ValueError, match="invalid literal") as e:
            worker.call(int, "x", timeout_s=60)
        assert "worker process" in "".join(e.value.__notes__)
    finally:
        worker.stop()


def hold_memory(n_bytes: int, seconds: float) -> int:
    block = np.ones(n_bytes // 8)
    time.sleep(seconds)
    return int(block[0])


def test_a_worker_past_its_memory_limit_is_stopped():
    worker = Worker("analysis", max_rss_bytes=400 * 2**20)
    try:
        worker.call(os.getpid, timeout_s=120)
        with pytest.raises(WorkerMemoryError, match="more than 0.4 GiB"):
            worker.call(hold_memory, 800 * 2**20, 30, timeout_s=60)
        assert worker._proc is None
    finally:
        worker.stop()
