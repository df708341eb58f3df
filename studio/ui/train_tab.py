"""Training tab: launch Flow-GRPO runs as background processes and watch them live."""

from __future__ import annotations

import gradio as gr

from studio.plots import curves_figure
from studio.training_service import CURVES, TrainingService


def build_train_tab(service: TrainingService) -> None:
    from training.config import get_preset

    presets = service.presets()
    defaults = get_preset(presets[0])

    def _d(name):
        return getattr(defaults, name)

    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                name = gr.Textbox(label="Run name", value="tinyworld-run-1", scale=2)
                preset = gr.Dropdown(presets, value=presets[0], label="Preset", scale=2)
                password = gr.Textbox(label="Admin password", type="password", scale=1,
                                      placeholder="only when the studio is exposed")
            with gr.Row():
                epochs = gr.Number(label="epochs", value=_d("epochs"), precision=0)
                max_minutes = gr.Number(label="max_minutes", value=_d("max_minutes"))
                group_size = gr.Number(label="group_size (K)", value=_d("group_size"), precision=0)
                lr = gr.Number(label="lr", value=_d("lr"))
                kl_beta = gr.Number(label="kl_beta", value=_d("kl_beta"))
            with gr.Row():
                w_recon = gr.Number(label="w_recon", value=_d("w_recon"))
                w_meta = gr.Number(label="w_meta", value=_d("w_meta"))
                w_traj = gr.Number(label="w_traj", value=_d("w_traj"))
                w_gen = gr.Number(label="w_gen", value=_d("w_gen"))
                main_steps = gr.Number(label="main_steps (rigid)", value=_d("main_steps"), precision=0)
                dynamic_steps = gr.Number(label="dynamic_steps (fluid)", value=_d("dynamic_steps"), precision=0)
            extra = gr.Textbox(label="More overrides (key=value, one per line)", lines=2)
            verdict = gr.Textbox(label="Batch calculator", interactive=False)
            with gr.Row():
                start = gr.Button("Launch run", variant="primary")
                check = gr.Button("Check batch plan")
        with gr.Column(scale=1):
            runs = gr.Dataframe(headers=["name", "status", "preset", "step", "reward", "started", "checkpoints"],
                                label="Runs", interactive=False)
            selected = gr.Dropdown([], label="Selected run", allow_custom_value=True)
            with gr.Row():
                cancel = gr.Button("Cancel")
                resume = gr.Button("Resume")
            with gr.Row():
                checkpoint = gr.Dropdown([], label="Checkpoint (best on validation first)", scale=3)
                use = gr.Button("Load into tuned slot", variant="secondary", scale=1)
            slot = gr.Textbox(label="Tuned slot", value=service.tuned_lora() or "(none)", interactive=False)
    with gr.Row():
        reward_plot = gr.Plot(label="Rewards")
        policy_plot = gr.Plot(label="KL and clipping")
    log = gr.Textbox(label="Log tail", lines=10, max_lines=10, autoscroll=True)
    samples = gr.Gallery(label="Sample clips", columns=4, height=200)
    timer = gr.Timer(2.0)

    knobs = [epochs, max_minutes, group_size, lr, kl_beta, w_recon, w_meta, w_traj, w_gen, main_steps, dynamic_steps]
    knob_names = ["epochs", "max_minutes", "group_size", "lr", "kl_beta", "w_recon", "w_meta", "w_traj", "w_gen",
                  "main_steps", "dynamic_steps"]

    def _knobs(values) -> dict:
        return {k: v for k, v in zip(knob_names, values) if v is not None}

    def on_check(p, ex, *vals):
        return service.verdict(p, _knobs(vals), ex)

    def table():
        return [[r[k] for k in ("name", "status", "preset", "step", "reward", "started", "checkpoints")]
                for r in service.runs()]

    def on_start(n, p, ex, pw, *vals, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            state = service.start(n, p, _knobs(vals), ex)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        names = [r[0] for r in table()]
        return table(), gr.Dropdown(choices=names, value=state["name"]), service.verdict(p, _knobs(vals), ex)

    def on_refresh(run, ckpt=None):
        rows = table()
        names = [r[0] for r in rows]
        if not run:
            return rows, gr.Dropdown(choices=names), None, None, "", [], gr.Dropdown(choices=[])
        try:
            st = service.status(run)
            choices = service.checkpoint_choices(run)
        except (KeyError, ValueError) as e:
            return rows, gr.Dropdown(choices=names), None, None, str(e), [], gr.Dropdown(choices=[])
        return (rows, gr.Dropdown(choices=names, value=run), curves_figure(st["metrics"], CURVES["rewards"], "Rewards"),
                curves_figure(st["metrics"], CURVES["policy"], "Policy"), st["log"], st["samples"],
                gr.Dropdown(choices=choices, value=ckpt if ckpt in [c[1] for c in choices] else None))

    def on_cancel(run, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            service.cancel(run)
        except (KeyError, ValueError) as e:
            raise gr.Error(str(e)) from None
        return table()

    def on_resume(run, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            service.resume(run)
        except (KeyError, ValueError) as e:
            raise gr.Error(str(e)) from None
        return table()

    def on_use(run, ckpt, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            path = service.use_checkpoint(run, ckpt or None)
        except (KeyError, ValueError) as e:
            raise gr.Error(str(e)) from None
        gr.Info(f"Tuned slot now uses {path}")
        return path

    def on_preset(p, ex):
        cfg = get_preset(p)
        values = [getattr(cfg, k) for k in knob_names]
        return [*values, service.verdict(p, dict(zip(knob_names, values)), ex)]

    check.click(on_check, [preset, extra, *knobs], verdict, api_name=False)
    preset.change(on_preset, [preset, extra], [*knobs, verdict], api_name=False)
    start.click(on_start, [name, preset, extra, password, *knobs], [runs, selected, verdict], api_name=False)
    outs = [runs, selected, reward_plot, policy_plot, log, samples, checkpoint]
    timer.tick(on_refresh, [selected, checkpoint], outs, api_name=False, show_progress="hidden")
    selected.change(on_refresh, selected, outs, api_name=False)
    cancel.click(on_cancel, [selected, password], runs, api_name=False)
    resume.click(on_resume, [selected, password], runs, api_name=False)
    use.click(on_use, [selected, checkpoint, password], slot, api_name=False)

    # --- API (gradio_client): plain JSON in and out; starting, cancelling and loading need admin rights.
    def train_start(name: str, preset: str = "tinyworld-cpu", overrides: str = "", password: str = "",
                    profile: gr.OAuthProfile | None = None) -> dict:
        """Launch a run: overrides are 'key=value' lines (TrainConfig names). Returns the run's state."""
        _guard(password, profile)
        try:
            return service.start(name, preset, {}, overrides)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def train_status(name: str = "") -> dict:
        """A run's state, metrics rows, log tail and checkpoints; with no name, the list of runs."""
        if not name:
            return {"runs": service.runs()}
        try:
            return service.status(name)
        except (KeyError, ValueError) as e:
            raise gr.Error(str(e)) from None

    def train_cancel(name: str, password: str = "", profile: gr.OAuthProfile | None = None) -> dict:
        _guard(password, profile)
        try:
            return service.cancel(name)
        except (KeyError, ValueError) as e:
            raise gr.Error(str(e)) from None

    gr.api(train_start, api_name="train_start")
    gr.api(train_status, api_name="train_status", queue=False)
    gr.api(train_cancel, api_name="train_cancel")


def _guard(password: str | None, profile) -> None:
    from studio.admin import check_admin

    try:
        check_admin(password, dict(profile) if profile else None)
    except PermissionError as e:
        raise gr.Error(str(e)) from None
