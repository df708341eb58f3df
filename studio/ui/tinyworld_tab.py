"""TinyWorld tab: type a scene, see the rendered clip with its exact depth and camera path."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import gradio as gr

EXAMPLES = [
    "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor.",
    "Camera pan right. A yellow pyramid and a white cylinder on a tiled floor at sunset.",
    "Camera tilt up. A large purple cylinder and a black cube on a striped floor.",
    "Camera pull out. A bouncing pink sphere and a spinning brown cube on a checkered floor.",
]


def render_tinyworld(prompt: str, seed: int = 0, num_frames: int = 17, size: int = 128) -> tuple[str, str, dict]:
    """Handler: render a prompt; returns (clip MP4, depth MP4, info). Bad input -> gr.Error."""
    from studio.tinyworld import render_clip
    from studio.video import colorize_depth, write_mp4

    prompt = (prompt or "").strip()
    if not prompt:
        raise gr.Error("Type a prompt, e.g. 'Camera orbit left. A red cube on a checkered floor.'")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clip = render_clip(prompt, num_frames=int(num_frames), height=int(size), width=int(size), seed=int(seed))
    except (ValueError, TypeError) as e:
        raise gr.Error(str(e)) from None
    for w in caught:
        gr.Warning(str(w.message))
    out = Path(tempfile.mkdtemp(prefix="tinyworld-"))
    video = write_mp4(clip.frames, out / "clip.mp4")
    depth = write_mp4(colorize_depth(clip.depth), out / "depth.mp4")
    info = {"moves": clip.moves, "scene": clip.scene.to_dict(), "K": clip.K.round(3).tolist(),
            "c2w_last": clip.c2w[-1].round(4).tolist(), "notes": clip.warnings}
    json.dumps(info)
    return str(video), str(depth), info


def build_tinyworld_tab() -> None:
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0], lines=2, scale=4)
        with gr.Column(scale=1):
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            frames = gr.Slider(5, 65, value=17, step=4, label="Frames")
            size = gr.Radio([64, 128, 256], value=128, label="Size")
    btn = gr.Button("Render", variant="primary")
    with gr.Row():
        video = gr.Video(label="TinyWorld clip", autoplay=True, loop=True)
        depth = gr.Video(label="Ground-truth depth", autoplay=True, loop=True)
    info = gr.JSON(label="Scene and camera")
    gr.Examples(EXAMPLES, inputs=[prompt])
    btn.click(render_tinyworld, [prompt, seed, frames, size], [video, depth, info], api_name="render_tinyworld")
