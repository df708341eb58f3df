"""Training tab: launch Flow-GRPO runs as background processes and watch them live."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr

from studio.pipelines import lora_display_name
from studio.errors import to_gradio_error
from studio.plots import curves_figure
from studio.app.training_service import CURVES, TrainingService
from studio.util import served_folder

COLUMNS = ["name", "status", "preset", "step", "reward (raw)", "started", "checkpoints"]
# The log box is replaced every tick; scroll it to its newest line whenever its text changed.
SCROLL_LOG_JS = """
() => {
  setTimeout(() => {
    const box = document.querySelector('#train-log textarea');
    if (box && box.dataset.shown !== box.value) { box.dataset.shown = box.value; box.scrollTop = box.scrollHeight; }
  }, 50);
}
"""
CONFIRM_DELETE_JS = """
(run, pw) => [run && confirm(`Delete run ${run} with its checkpoints, samples and log? This cannot be undone.`) ? run : "", pw]
"""


def slot_name(path: str | None) -> str:
    return lora_display_name(path) if path else "(none)"


def publish_samples(run: str, samples: list[str]) -> list[str]:
    """Copies of a run's newest sample clips in a served folder of their own: the runs folder is never
    served (it may sit in the data dir on a Space's /data), and a copy is made once per clip."""
    out_dir = served_folder("train-samples") / run
    out = []
    for src in map(Path, samples):
        dst = out_dir / f"{src.parent.name}-{src.name}"
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        out.append(str(dst))
    return out


def table_rows(rows: list[dict]) -> list[list]:
    """Runs as table rows: a queued run shows its place in the queue, the reward is the raw weighted one."""
    out = []
    for r in rows:
        status = f"queued (#{r['queue']})" if r.get("queue") else r["status"]
        reward = round(r["reward"], 4) if isinstance(r.get("reward"), float) else r.get("reward")
        out.append([r["name"], status, r["preset"], r["step"], reward, r["started"], r["checkpoints"]])
    return out


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
                epochs = gr.Number(label="epochs", value=_d("epochs"), precision=0, minimum=1)
                max_minutes = gr.Number(label="max_minutes (0 = no limit)", value=_d("max_minutes"), minimum=0)
                group_size = gr.Number(label="group_size (K)", value=_d("group_size"), precision=0, minimum=2)
                lr = gr.Number(label="lr", value=_d("lr"))
                kl_beta = gr.Number(label="kl_beta", value=_d("kl_beta"), minimum=0)
            with gr.Row():
                w_recon = gr.Number(label="w_recon", value=_d("w_recon"), minimum=0)
                w_meta = gr.Number(label="w_meta", value=_d("w_meta"), minimum=0)
                w_traj = gr.Number(label="w_traj", value=_d("w_traj"), minimum=0)
                w_gen = gr.Number(label="w_gen", value=_d("w_gen"), minimum=0)
                main_steps = gr.Number(label="main_steps (rigid)", value=_d("main_steps"), precision=0, minimum=1)
                dynamic_steps = gr.Number(label="dynamic_steps (fluid)", value=_d("dynamic_steps"), precision=0, minimum=0)
            extra = gr.Textbox(label="More overrides (key=value, one per line)", lines=2,
                               placeholder="lora_targets=to_q,to_k\ndynamic_prompts=")
            verdict = gr.Textbox(label="Batch calculator", interactive=False)
            estimate = gr.Textbox(label="Time estimate", interactive=False,
                                  value=lambda: service.estimate(presets[0]))
            with gr.Row():
                start = gr.Button("Launch run", variant="primary")
                check = gr.Button("Check batch plan and time")
        with gr.Column(scale=1):
            runs = gr.Dataframe(headers=COLUMNS, label="Runs", interactive=False)
            selected = gr.Dropdown([], label="Selected run", allow_custom_value=True)
            with gr.Row():
                cancel = gr.Button("Cancel (again: force)")
                resume = gr.Button("Resume")
                delete = gr.Button("Delete run", variant="stop")
            with gr.Row():
                checkpoint = gr.Dropdown([], label="Checkpoint (best on validation first)", scale=3)
                use = gr.Button("Load into tuned slot", variant="secondary", scale=1)
            slot = gr.Textbox(label="Tuned slot", value=lambda: slot_name(service.tuned_lora()), interactive=False)
    with gr.Row():
        reward_plot = gr.Plot(label="Rewards (raw component means; the weighted raw sum)")
        policy_plot = gr.Plot(label="KL and clipping")
    log = gr.Textbox(label="Log tail", lines=10, max_lines=10, autoscroll=True, elem_id="train-log")
    samples = gr.Gallery(label="Sample clips", columns=4, height=200)
    seen = gr.State(None)  # run statuses at the last refresh, to toast a run that fails meanwhile
    timer = gr.Timer(2.0)

    knobs = [epochs, max_minutes, group_size, lr, kl_beta, w_recon, w_meta, w_traj, w_gen, main_steps, dynamic_steps]
    knob_names = ["epochs", "max_minutes", "group_size", "lr", "kl_beta", "w_recon", "w_meta", "w_traj", "w_gen",
                  "main_steps", "dynamic_steps"]

    def _knobs(values) -> dict:
        return {k: v for k, v in zip(knob_names, values) if v is not None}

    def on_check(p, ex, *vals):
        return service.verdict(p, _knobs(vals), ex), service.estimate(p, _knobs(vals), ex)

    def table():
        return table_rows(service.runs())

    def on_start(n, p, ex, pw, *vals, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            state = service.start(n, p, _knobs(vals), ex)
        except ValueError as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        place = service.jobs.queue_position(state["name"])
        time_estimate = service.estimate(p, _knobs(vals), ex)
        gr.Info(f"Run {state['name']} " + (f"is queued (#{place}); it starts when the runs before it end. " if place
                                           else "started. ") + time_estimate)
        rows = table()
        return (rows, gr.Dropdown(choices=[r[0] for r in rows], value=state["name"]), service.verdict(p, _knobs(vals), ex),
                time_estimate)

    def on_refresh(run, ckpt=None, seen_before=None):
        all_runs = service.runs()
        messages, seen_now = service.notices(seen_before, all_runs)
        for m in messages:
            gr.Warning(m)
        rows = table_rows(all_runs)
        names = [r[0] for r in rows]
        if not run:
            return rows, gr.Dropdown(choices=names), None, None, "", [], gr.Dropdown(choices=[]), seen_now
        try:
            st = service.status(run)
            run_dir = service.jobs.run_dir(run)
            # Values are paths inside the run, never server paths (they reach the page and the API).
            choices = [(label, str(Path(path).relative_to(run_dir))) for label, path in service.checkpoint_choices(run)]
        except (KeyError, ValueError) as e:
            return rows, gr.Dropdown(choices=names), None, None, str(e), [], gr.Dropdown(choices=[]), seen_now
        log_text = st["log"]
        if st["error"]:
            log_text += f"\n\n>>> {st['state']['status']}: {st['error']}"
        return (rows, gr.Dropdown(choices=names, value=run), curves_figure(st["metrics"], CURVES["rewards"], "Rewards"),
                curves_figure(st["metrics"], CURVES["policy"], "Policy"), log_text, publish_samples(run, st["samples"]),
                gr.Dropdown(choices=choices, value=ckpt if ckpt in [c[1] for c in choices] else None), seen_now)

    def on_cancel(run, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            state = service.cancel(run)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        if state.get("forced"):
            gr.Warning(state["message"])
        else:
            gr.Info(state["message"])
        return table()

    def on_resume(run, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            state = service.resume(run)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        gr.Info(state["message"])
        return table()

    def on_delete(run, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        if not run:  # the confirmation was declined
            return table(), gr.Dropdown()
        try:
            message = service.delete(run)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        gr.Info(message)
        rows = table()
        return rows, gr.Dropdown(choices=[r[0] for r in rows], value=None)

    def on_use(run, ckpt, pw, profile: gr.OAuthProfile | None = None):
        _guard(pw, profile)
        try:
            if ckpt and (Path(ckpt).is_absolute() or ".." in Path(ckpt).parts):
                raise ValueError(f"checkpoint: {ckpt!r} is not one of run {run!r}'s checkpoints; pick one from the list")
            path = service.use_checkpoint(run, str(service.jobs.run_dir(run) / ckpt) if ckpt else None)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        gr.Info(f"Tuned slot now uses {slot_name(path)}; the Generate tab uses it from the next click")
        return slot_name(path)

    def on_preset(p, ex):
        cfg = get_preset(p)
        values = [getattr(cfg, k) for k in knob_names]
        return [*values, service.verdict(p, dict(zip(knob_names, values)), ex),
                service.estimate(p, dict(zip(knob_names, values)), ex)]

    check.click(on_check, [preset, extra, *knobs], [verdict, estimate], api_name=False)
    preset.change(on_preset, [preset, extra], [*knobs, verdict, estimate], api_name=False)
    start.click(on_start, [name, preset, extra, password, *knobs], [runs, selected, verdict, estimate], api_name=False)
    outs = [runs, selected, reward_plot, policy_plot, log, samples, checkpoint, seen]
    timer.tick(on_refresh, [selected, checkpoint, seen], outs, api_name=False, show_progress="hidden").then(
        None, None, None, js=SCROLL_LOG_JS)
    selected.change(on_refresh, [selected, checkpoint, seen], outs, api_name=False).then(None, None, None, js=SCROLL_LOG_JS)
    cancel.click(on_cancel, [selected, password], runs, api_name=False)
    resume.click(on_resume, [selected, password], runs, api_name=False)
    delete.click(on_delete, [selected, password], [runs, selected], api_name=False, js=CONFIRM_DELETE_JS)
    use.click(on_use, [selected, checkpoint, password], slot, api_name=False)

    # --- API (gradio_client): plain JSON in and out; starting, cancelling and loading need admin rights.
    def train_start(name: str, preset: str = "tinyworld-cpu", overrides: str = "", password: str = "",
                    profile: gr.OAuthProfile | None = None) -> dict:
        """Launch a run: overrides are 'key=value' lines (TrainConfig names). Returns the run's state."""
        _guard(password, profile)
        try:
            return service.start(name, preset, {}, overrides)
        except ValueError as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None

    def train_status(name: str = "") -> dict:
        """A run's state, metrics rows, log tail and checkpoints; with no name, the list of runs."""
        if not name:
            return {"runs": service.runs()}
        try:
            st = service.status(name)
            run_dir = service.jobs.run_dir(name)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
        # Files as paths inside the run: the API answers with no server path.
        return {**st, "checkpoints": [str(Path(p).relative_to(run_dir)) for p in st["checkpoints"]],
                "samples": [str(Path(p).relative_to(run_dir)) for p in st["samples"]]}

    def train_cancel(name: str, password: str = "", profile: gr.OAuthProfile | None = None) -> dict:
        """Stop a run at its next safe point with a checkpoint; called again while it stops, force it."""
        _guard(password, profile)
        try:
            return service.cancel(name)
        except (KeyError, ValueError) as e:
            raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None

    gr.api(train_start, api_name="train_start")
    gr.api(train_status, api_name="train_status", queue=False)
    gr.api(train_cancel, api_name="train_cancel")


def _guard(password: str | None, profile) -> None:
    from studio.app.admin import check_admin

    try:
        check_admin(password, dict(profile) if profile else None)
    except PermissionError as e:
        raise to_gradio_error(e, "training request", not_found=(KeyError,)) from None
