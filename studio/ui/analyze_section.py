"""'Analyse your own clip' (in the Generate & compare tab): upload a video, get its depth, point
cloud, camera path and 3D-consistency metrics.

The analysis runs in a worker process (studio.worker) with a hard time and memory limit; the
server only checks the upload's size and header. Files go to a bounded cache under the data dir
named by the upload's SHA-256, the prompt and the estimator.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from studio.cache import cache_entry, digest, file_digest
from studio.errors import handler
from studio.uploads import (FORMATS_TEXT, MAX_UPLOAD_BYTES, MAX_UPLOAD_FRAMES, UPLOAD_SUFFIXES, analyze_upload,
                            check_upload)
from studio.worker import Worker

ANALYZE_TIMEOUT_S = float(os.environ.get("STUDIO_ANALYZE_TIMEOUT_S", 240))
ANALYZE_MAX_RSS_BYTES = int(float(os.environ.get("STUDIO_ANALYZE_MAX_RSS_GB", 4)) * 2**30)
KEEP_ANALYSES = 32
ANALYSIS_WORKER = Worker("analysis", max_rss_bytes=ANALYZE_MAX_RSS_BYTES)


def analysis_dir(data_dir: Path | str, video_path: str | Path, prompt: str | None, estimator: str) -> Path:
    """data/compare/uploads/<digest of the file's bytes, prompt, estimator>: the same upload gets the
    same folder across restarts; the oldest beyond KEEP_ANALYSES are removed."""
    key = digest("analyze", file_digest(video_path), (prompt or "").strip(), estimator)
    return cache_entry(Path(data_dir) / "compare" / "uploads", key, keep=KEEP_ANALYSES)


def run_analyze(video_path: str | None, prompt: str | None, estimator: str = "tinyworld", out_dir=None, *,
                data_dir: Path | str = "data", worker: Worker | None = None,
                timeout_s: float = ANALYZE_TIMEOUT_S) -> dict:
    """Handler: 3D analysis of an uploaded clip (also the /analyze API). Bad uploads -> UserError (a ValueError).

    The upload is checked here (size, header); the decoding and analysis run in `worker` when given
    (the studio's), else in this process.
    """
    check_upload(video_path, prompt)  # refuse early, before the file is hashed or a worker started
    out = Path(out_dir) if out_dir else analysis_dir(data_dir, video_path, prompt, estimator)
    if worker is None:
        return analyze_upload(video_path, prompt, out, estimator)
    return worker.call(analyze_upload, video_path, prompt, out, estimator, timeout_s=timeout_s)


def build_analyze_section(data_dir: Path | str = "data") -> None:
    with gr.Accordion("Analyse your own clip", open=False):
        with gr.Row():
            upload = gr.File(label=f"Clip to analyse ({FORMATS_TEXT}, up to {MAX_UPLOAD_BYTES // 2**20} MiB)",
                             file_types=list(UPLOAD_SUFFIXES), type="filepath", elem_id="analyze-upload")
            with gr.Column():
                a_prompt = gr.Textbox(label="Its prompt (for trajectory and CLIP metrics)", lines=2)
                gr.Markdown(f"At most {MAX_UPLOAD_FRAMES} frames, evenly spaced, are analysed at up to 128 px "
                            "on the long side.")
                a_go = gr.Button("Analyse")
        with gr.Row():
            a_depth = gr.Video(label="Estimated depth", autoplay=True, loop=True, interactive=False)
            a_pc = gr.Model3D(label="Fused point cloud", height=300)
            a_plot = gr.Plot(label="Estimated camera path")
        a_metrics = gr.JSON(label="Metrics")

    @handler(what="analysis")
    def on_analyze(v, p):
        r = run_analyze(v, p, data_dir=data_dir, worker=ANALYSIS_WORKER)
        if r["degenerate"]:
            gr.Warning(f"This clip is degenerate, its scores say nothing: {r['degenerate']}")
        return r["files"]["depth_video"], r["files"]["glb"], r["figure"], r["metrics"]

    # One analysis at a time: the worker is one process, and Gradio's queue shows the others their place.
    a_go.click(on_analyze, [upload, a_prompt], [a_depth, a_pc, a_plot, a_metrics], api_name="analyze",
               concurrency_limit=1, concurrency_id="analysis")
