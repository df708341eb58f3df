"""Generate & compare tab: baseline vs World-R1-tuned, same seed, with depth, paths, point clouds, metrics."""

from __future__ import annotations

import random
import re
from pathlib import Path

import gradio as gr

from studio.app import catalog
from studio.app.admin import is_exposed
from studio.camera import MOVES, camera_clause, parse_camera_motion
from studio.app.compare import compare_dir
from studio.errors import REQUEST_TIMEOUT_S, handler
from studio.app.services import Services
from studio.app.zerogpu import MIN_S, generation_seconds, on_gpu

EXAMPLES = [
    "Camera orbit left, then push in. A red cube and a blue sphere sit on a checkered floor under a clear blue sky.",
    "Camera pan right. A yellow pyramid and a white cylinder rest on a tiled floor at sunset.",
    "Camera move left, then tilt up. A large purple cylinder stands on a striped floor.",
    "Camera pull out. A green cone and a small orange cube on a checkered floor in daylight.",
    "Camera orbit right, then pan left. A black sphere rests on a tiled ground under an overcast sky.",
]
_CLAUSE = re.compile(r"^\s*camera\b[^.]*\.\s*", re.IGNORECASE)


def with_camera_clause(prompt: str, moves: list[str]) -> str:
    """Replace the prompt's leading 'Camera ... .' clause by the one for `moves`."""
    body = _CLAUSE.sub("", prompt or "").strip()
    clause = camera_clause(list(moves or []))
    return f"{clause} {body}".strip()


def _compare_gpu_seconds(services, prompt, seed, steps, guidance, frames, size, camera_init, model, lora,
                         progress=None) -> float:
    try:
        return generation_seconds(str(model or "tinyworld").strip(), int(steps), int(frames), int(size), int(size))
    except (TypeError, ValueError):
        return MIN_S  # bad input: the handler refuses it before any GPU work


@on_gpu(_compare_gpu_seconds)
def run_compare(services: Services, prompt, seed, steps, guidance, frames, size, camera_init, model, lora,
                progress=None) -> dict:
    """Handler: validate, compare, and return plain data for the outputs (also the /generate API)."""
    from studio.app.compare import compare

    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("the prompt is empty: describe a scene, e.g. 'Camera orbit left. A red cube on a checkered floor.'")
    try:
        seed, steps, frames, size = int(seed), int(steps), int(frames), int(size)
        guidance = float(guidance)
    except (TypeError, ValueError):
        raise ValueError("seed, steps, frames and size must be whole numbers and guidance a number") from None
    exposed = is_exposed()
    model = catalog.resolve_model(model, exposed)
    from_slot = (lora or "").strip() == catalog.TUNED_SLOT
    lora = catalog.resolve_lora(lora, services.data_dir, exposed, tuned_slot=services.training.tuned_lora())
    slot_notes = []
    if from_slot and lora:  # a slot LoRA made for another base shows the baseline alone, and says why
        from studio.pipelines import check_lora_base, load_pipeline

        try:
            check_lora_base(Path(lora), load_pipeline(model))
        except ValueError as e:
            slot_notes.append(f"The tuned slot is not shown: {e}")
            lora = None
    out_dir = compare_dir(services.data_dir, prompt, seed, steps, guidance, frames, size, camera_init, model, lora)
    c = compare(prompt, seed=seed, num_frames=frames, height=size, width=size, steps=steps, guidance=guidance,
                camera_init=bool(camera_init), model=model, lora=lora, out_dir=out_dir, progress=progress)
    base, tuned = c.side("baseline"), c.side("tuned")
    downloads = [str(c.out_dir / "metrics.json")] + [p for s in c.sides for k, p in s.files.items()
                                                    if k in ("video", "glb", "ply")]
    return {
        "baseline_video": base.files["video"], "tuned_video": tuned.files["video"] if tuned else None,
        "baseline_depth": base.files["depth_video"], "tuned_depth": tuned.files["depth_video"] if tuned else None,
        "baseline_glb": base.files["glb"], "tuned_glb": tuned.files["glb"] if tuned else None,
        "figure": c.figure, "table": c.table, "downloads": downloads,
        "moves": base.clip.moves, "notes": slot_notes + c.notes, "timings": c.timings,
        "metrics": {s.label: s.metrics for s in c.sides},
    }


# 64- and 128-px TinyWorld clips drawn at 8x / 4x with crisp pixels: the browser's own smoothing at
# the column's width (about 550 px) blurs them.
GENERATE_CSS = ".crisp-video video { image-rendering: pixelated; width: 512px; max-width: 100%; height: auto; }\n"

SYNC_PLAY_JS = """
() => {
  setTimeout(() => {
    const vids = ['#gen-baseline video', '#gen-tuned video'].map(s => document.querySelector(s)).filter(Boolean);
    vids.forEach(v => { v.loop = true; v.muted = true; v.currentTime = 0; });
    vids.forEach(v => v.play().catch(() => {}));
  }, 300);
}
"""


def lora_choices(services: Services) -> list[tuple[str, str]]:
    slot = services.training.tuned_lora()
    slot_label = f"tuned slot ({catalog.lora_display_name(slot)})" if slot else "tuned slot (empty: baseline only)"
    return [(slot_label, catalog.TUNED_SLOT), ("none (baseline only)", "none")] + [
        (e.name, e.name) for e in catalog.lora_entries(services.data_dir)]


def build_generate_tab(services: Services) -> None:
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", value=EXAMPLES[0], lines=3, max_lines=6,
                                elem_id="gen-prompt")
            moves = gr.Dropdown(list(MOVES), value=parse_camera_motion(EXAMPLES[0]), multiselect=True,
                                label="Camera moves (writes the camera clause)")
        with gr.Column(scale=2):
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=2**31 - 1)
                dice = gr.Button("🎲", scale=0, min_width=40)
                camera_init = gr.Checkbox(label="Camera-aware init", value=True)
            with gr.Row():
                steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
                guidance = gr.Slider(1.0, 15.0, value=5.0, step=0.5, label="Guidance")
            with gr.Row():
                frames = gr.Slider(5, 33, value=17, step=4, label="Frames (4k+1)")
                size = gr.Radio([64, 128], value=64, label="Size")
            with gr.Row():
                custom = not is_exposed()  # an exposed studio loads only what it lists
                model = gr.Dropdown([(f"{e.name} ({e.note})" if e.note else e.name, e.name) for e in catalog.model_entries()],
                                    value="tinyworld", label="Model", allow_custom_value=custom,
                                    info="TinyWorld, a Wan preset or a Wan checkpoint on disk"
                                    + (" (or type a local dir / hub id)" if custom else ""), elem_id="gen-model")
                lora = gr.Dropdown(lora_choices(services), value=catalog.TUNED_SLOT, label="Tuned LoRA",
                                   allow_custom_value=custom, elem_id="gen-lora",
                                   info="'tuned slot' = the LoRA chosen in the Training tab, read at each click")
    go = gr.Button("Generate & compare", variant="primary", elem_id="gen-go")
    with gr.Row():
        base_video = gr.Video(label="Baseline", autoplay=True, loop=True, elem_id="gen-baseline", interactive=False,
                              elem_classes=["crisp-video"])
        tuned_video = gr.Video(label="World-R1 tuned", autoplay=True, loop=True, elem_id="gen-tuned", interactive=False,
                               elem_classes=["crisp-video"])
    with gr.Row():
        base_depth = gr.Video(label="Baseline depth", autoplay=True, loop=True, interactive=False)
        tuned_depth = gr.Video(label="Tuned depth", autoplay=True, loop=True, interactive=False)
    with gr.Row():
        table = gr.Dataframe(headers=["metric", "baseline", "tuned", "Δ (tuned − baseline)", "verdict"],
                             label="Metrics", interactive=False, elem_id="gen-metrics")
        plot = gr.Plot(label="Camera paths", elem_id="gen-paths")
    with gr.Row():
        base_pc = gr.Model3D(label="Baseline point cloud", elem_id="gen-pc-baseline", height=320)
        tuned_pc = gr.Model3D(label="Tuned point cloud", elem_id="gen-pc-tuned", height=320)
    notes = gr.Markdown()
    downloads = gr.File(label="Downloads (MP4, GLB, PLY, metrics JSON)", file_count="multiple")

    @handler(timeout_s=REQUEST_TIMEOUT_S, what="generation")
    def on_generate(p, s, st, g, f, sz, ci, m, lo, progress=gr.Progress()):
        try:
            r = run_compare(services, p, s, st, g, f, sz, ci, m, lo, progress=progress)
        except (ValueError, FileNotFoundError, PermissionError) as e:
            raise gr.Error(str(e)) from None
        for n in r["notes"]:
            gr.Warning(n)
        md = f"Camera moves read from the prompt: **{', '.join(r['moves']) or 'none'}** · " \
             f"total {r['timings']['total_s']:.1f} s"
        return (r["baseline_video"], r["tuned_video"], r["baseline_depth"], r["tuned_depth"], r["table"],
                r["figure"], r["baseline_glb"], r["tuned_glb"], md, r["downloads"])

    outputs = [base_video, tuned_video, base_depth, tuned_depth, table, plot, base_pc, tuned_pc, notes, downloads]
    inputs = [prompt, seed, steps, guidance, frames, size, camera_init, model, lora]
    go.click(on_generate, inputs, outputs, api_name="generate").then(None, None, None, js=SYNC_PLAY_JS)
    dice.click(lambda: random.randint(0, 2**31 - 1), None, seed, api_name=False)
    lora.focus(lambda: gr.Dropdown(choices=lora_choices(services)), None, lora, api_name=False)  # new runs appear
    moves.input(with_camera_clause, [prompt, moves], prompt, api_name=False)
    prompt.blur(lambda p: gr.Dropdown(value=parse_camera_motion(p or "")), prompt, moves, api_name=False)
    # Lazily cached: the first click on an example computes it, later clicks (anyone's) are instant.
    gr.Examples([[e, 0, 20, 5.0, 17, 64, True, "tinyworld", catalog.TUNED_SLOT] for e in EXAMPLES], inputs=inputs,
                outputs=outputs, fn=on_generate, cache_examples=True, cache_mode="lazy",
                label="TinyWorld examples (cached after the first run)")
