"""TinyWorld tab: type a scene, see the rendered clip with its exact depth and camera path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gradio as gr

from studio.cache import cache_entry, digest
from studio.errors import REQUEST_TIMEOUT_S, UserError, handler

EXAMPLES = [
    "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor.",
    "Camera pan right. A yellow pyramid and a white cylinder on a tiled floor at sunset.",
    "Camera tilt up. A large purple cylinder and a black cube on a striped floor.",
    "Camera pull out. A bouncing pink sphere and a spinning brown cube on a checkered floor.",
]
MAX_PROMPT_CHARS = 2000
SIZES = (64, 128, 256)
MAX_FRAMES = 65   # the tab's slider; the renderer itself takes up to 257 x 1024 x 1024, far too much for a request
KEEP_RENDERS = 32  # render folders kept under data/compare/tinyworld


def render_tinyworld(prompt: str, seed: int = 0, num_frames: int = 17, size: int = 128,
                     data_dir: Path | str = "data") -> tuple[str, str, dict, list[str]]:
    """Handler: render a prompt; returns (clip MP4, depth MP4, info, warnings). Bad input -> UserError.

    Files go to data/compare/tinyworld/<SHA-256 of the inputs> (the renderer is deterministic),
    the oldest beyond KEEP_RENDERS removed.
    """
    from studio.tinyworld import render_clip
    from studio.video import colorize_depth, write_mp4

    prompt = (prompt or "").strip() if isinstance(prompt, str) or prompt is None else prompt
    if not isinstance(prompt, str):
        raise UserError(f"expected text, got {type(prompt).__name__}", field="Prompt")
    if not prompt:
        raise UserError("type a prompt, e.g. 'Camera orbit left. A red cube on a checkered floor.'", field="Prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"{len(prompt)} characters; at most {MAX_PROMPT_CHARS}", field="Prompt")
    try:
        seed, num_frames, size = int(seed), int(num_frames), int(size)
    except (TypeError, ValueError):
        raise UserError("seed, frames and size must be whole numbers", field="Seed / Frames / Size") from None
    if size not in SIZES:
        raise UserError(f"{size} is not offered; pick one of {', '.join(map(str, SIZES))}", field="Size")
    if not 2 <= num_frames <= MAX_FRAMES:
        raise UserError(f"{num_frames} frames; pick 2 to {MAX_FRAMES}", field="Frames")
    if not 0 <= seed < 2**32:
        raise UserError(f"{seed} is out of range; pick 0 to {2**32 - 1}", field="Seed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            clip = render_clip(prompt, num_frames=num_frames, height=size, width=size, seed=seed)
        except TypeError as e:
            raise UserError(str(e)) from None
    out = cache_entry(Path(data_dir) / "compare" / "tinyworld", digest("tinyworld", prompt, seed, num_frames, size),
                      keep=KEEP_RENDERS)
    video = write_mp4(clip.frames, out / "clip.mp4")
    depth = write_mp4(colorize_depth(clip.depth), out / "depth.mp4")
    info = {"moves": clip.moves, "scene": clip.scene.to_dict(), "K": clip.K.round(3).tolist(),
            "c2w_last": clip.c2w[-1].round(4).tolist(), "notes": clip.warnings}
    json.dumps(info)
    return str(video), str(depth), info, [str(w.message) for w in caught]


def build_tinyworld_tab(data_dir: Path | str = "data") -> None:
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0], lines=2, scale=4)
        with gr.Column(scale=1):
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
            frames = gr.Slider(5, MAX_FRAMES, value=17, step=4, label="Frames")
            size = gr.Radio(list(SIZES), value=128, label="Size")
    btn = gr.Button("Render", variant="primary")
    with gr.Row():
        video = gr.Video(label="TinyWorld clip", autoplay=True, loop=True)
        depth = gr.Video(label="Ground-truth depth", autoplay=True, loop=True)
    info = gr.JSON(label="Scene and camera")
    gr.Examples(EXAMPLES, inputs=[prompt])

    @handler(timeout_s=REQUEST_TIMEOUT_S, what="render")
    def on_render(p, s, f, sz):
        clip, depth_video, scene, notes = render_tinyworld(p, s, f, sz, data_dir=data_dir)
        for n in notes:
            gr.Warning(n)
        return clip, depth_video, scene

    btn.click(on_render, [prompt, seed, frames, size], [video, depth, info], api_name="render_tinyworld")
