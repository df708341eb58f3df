"""Study administration (admin only when exposed): define a study and pre-generate its clips."""

from __future__ import annotations

import gradio as gr

from studio.camera import parse_camera_motion
from studio.app.services import Services
from studio.tinyworld.scene import parse_scene_prompt


def categorize(prompt: str) -> str:
    """static / camera / dynamic, the categories the results are broken down by."""
    if any(o.motion for o in parse_scene_prompt(prompt).objects):
        return "dynamic"
    moves = parse_camera_motion(prompt)
    return "camera" if moves and moves != ["fixed"] else "static"


def create_study(services: Services, name: str, prompts_text: str, seeds_text: str, systems_text: str,
                 cap: int = 40, attention_rate: float = 0.1) -> dict:
    """Handler: validate, create the study, start pre-generating its clips in the background."""
    from studio.study.battles import PromptSpec, StudySpec

    prompts = [p.strip() for p in (prompts_text or "").splitlines() if p.strip()]
    if not prompts:
        raise ValueError("list at least one prompt, one per line")
    try:
        seeds = [int(s) for s in (seeds_text or "").replace(",", " ").split()]
    except ValueError:
        raise ValueError("seeds must be whole numbers separated by commas or spaces") from None
    systems = [s.strip() for s in (systems_text or "").split(",") if s.strip()]
    for s in systems:
        services.system_spec(s)  # 'tuned' with an empty slot fails here, before anything is written
    spec = StudySpec(name=(name or "").strip(), prompts=[PromptSpec(p, categorize(p)) for p in prompts],
                     seeds=seeds, systems=systems, max_votes_per_evaluator=int(cap),
                     attention_rate=float(attention_rate))
    services.study.create_study(spec)
    services.study.start_pregeneration(spec.name)
    return services.study.progress(spec.name)


def build_study_admin(services: Services, study_dropdown: gr.Dropdown | None = None) -> None:
    """The admin section; `study_dropdown` (from build_study_tab) lists a new study at once."""
    from studio.ui.generate_tab import EXAMPLES

    with gr.Accordion("Create a study (admin)", open=False):
        with gr.Row():
            name = gr.Textbox(label="Study name", value="tinyworld-baseline-vs-tuned")
            systems = gr.Textbox(label="Systems (comma-separated)", value="baseline, tuned",
                                 info="reference first (results show how often the others win against it): "
                                      "baseline, tuned (the tuned slot), or MODEL|LORA_PATH")
            seeds = gr.Textbox(label="Seeds", value="0, 1")
            cap = gr.Number(label="Votes per evaluator", value=40, precision=0, minimum=1)
            rate = gr.Slider(0, 0.5, value=0.1, step=0.05, label="Attention-check rate")
        prompts = gr.Textbox(label="Prompts (one per line)", lines=5, value="\n".join(EXAMPLES))
        password = gr.Textbox(label="Admin password", type="password", placeholder="only when the studio is exposed")
        create = gr.Button("Create & pre-generate clips", variant="primary")
        progress = gr.JSON(label="Pre-generation progress")
        timer = gr.Timer(2.0, active=False)

    def on_create(n, pr, se, sy, c, r, pw, profile: gr.OAuthProfile | None = None):
        from studio.app.admin import check_admin

        try:
            check_admin(pw, dict(profile) if profile else None)
            progress = create_study(services, n, pr, se, sy, c, r)
        except (ValueError, PermissionError, RuntimeError) as e:
            raise gr.Error(str(e)) from None
        listed = gr.update(choices=services.study.list_studies(), value=(n or "").strip())
        return progress, gr.Timer(active=True), *([listed] if study_dropdown is not None else [])

    def on_tick(n):
        try:
            p = services.study.progress((n or "").strip())
        except (ValueError, KeyError, LookupError) as e:
            return {"error": str(e)}, gr.Timer(active=False)
        return p, gr.Timer(active=p["running"])

    create.click(on_create, [name, prompts, seeds, systems, cap, rate, password],
                 [progress, timer, *([study_dropdown] if study_dropdown is not None else [])], api_name=False)
    timer.tick(on_tick, name, [progress, timer], api_name=False, show_progress="hidden")
