"""A/B study tab: wiring only; the handlers are `studio.app.study_service.StudyService`.

app.py calls `build_study_tab(services)` inside `with gr.Tab(...)`, where `services` is a
`StudyService` or has one as `.study`; it returns the study dropdown, for the admin section to
refresh. Launch with `studio.ui.serving.launch_options(data_dir, css=STUDY_CSS)`: the clips
are served from Gradio's upload folder, never from the data dir.

Endpoints for gradio_client: /ab_next, /ab_vote, /ab_results (plain JSON in and out);
/ab_next and /ab_vote also answer a plain HTTP POST to /gradio_api/run/ab_next (body
{"data": [...]}) without the queue, with 400/403/404 and {"error": message} for bad input.
/ab_results needs admin rights when the studio is exposed (studio.app.admin).

Run alone (the load script does, until app.py is ready):
    python -m studio.ui.study_tab --port 7861 --data-dir ./data
"""

from __future__ import annotations

import argparse
import os
import tempfile

import gradio as gr

from studio.app.admin import check_admin
from studio.study.db import CRITERIA
from studio.app.study_service import (
    StudyService,
    answers_from_fields,
    check_flag,
    new_browser_evaluator_id,
    resolve_evaluator,
)
from studio.study.stats import (
    fig_bradley_terry,
    fig_categories,
    fig_evaluators,
    fig_outcomes,
    fig_win_rates,
    headline_text,
)
from studio.errors import to_gradio_error
from studio.ui.serving import launch_options, served_url

ANSWER_CHOICES = [("Left better", "left"), ("Right better", "right"), ("Both good", "both_good"), ("Both bad", "both_bad")]
CRITERION_LABELS = {
    "3d_consistency": "3D consistency: which clip keeps a stable, solid 3D world?",
    "camera": "Camera: which clip's camera follows the prompt?",
    "overall": "Overall: which clip is better? (required)",
}
# Study votes are cheap DB transactions; let several run at once instead of gradio's default of 1.
CONCURRENCY = dict(concurrency_limit=8, concurrency_id="ab_study")
USER_ERRORS = (ValueError, KeyError, PermissionError)
CLIP_MAX_PX = 512
# The clips are small (64×64): shown at an integer scale with square pixels, not smeared by the
# browser's bilinear upscaling. `_FIT_JS` picks the largest integer scale that fits.
STUDY_CSS = """
.ab-clip video { image-rendering: pixelated; object-fit: contain; max-width: 100%; display: block; margin: 0 auto; }
"""
_FIT_JS = f"""() => {{
  for (const id of ["ab-left", "ab-right"]) {{
    const box = document.getElementById(id);
    const v = box && box.querySelector("video");
    if (!v || !v.videoWidth) continue;
    const room = Math.min(box.clientWidth || {CLIP_MAX_PX}, {CLIP_MAX_PX});
    const k = Math.max(1, Math.floor(room / v.videoWidth));
    v.style.width = (v.videoWidth * k) + "px";
    v.style.height = (v.videoHeight * k) + "px";
  }}
}}"""


def _restart_js(elem_id: str) -> str:
    # The clip loops by restarting on "ended": with the <video loop> attribute the browser
    # never fires "ended", and that event is how we know a clip was watched once.
    return f"() => {{ const v = document.querySelector('#{elem_id} video'); if (v) {{ v.currentTime = 0; v.play(); }} }}"


def _empty_battle() -> dict:
    return {"battle_id": None, "evaluator": None, "voted": False, "header": {}}


def _header(h: dict, votes_done: int) -> str:
    return (f"**Pair {h['number']}** · {votes_done}/{h['cap']} votes · "
            f"*{h['category']}* prompt:\n\n> {h['prompt']}")


def _table(rows: list[dict], columns: list[str] | None = None):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns) if rows or columns else pd.DataFrame()
    return frame.round(4)


def build_study_tab(services) -> gr.Dropdown:
    """Build the vote and results pages inside the caller's Blocks context; returns the study dropdown."""
    service: StudyService = getattr(services, "study", services)
    studies = service.list_studies()

    browser_id = gr.BrowserState(
        "", storage_key="world_r1_study_evaluator",
        # A fixed secret keeps an evaluator's id across app restarts (a random one would not).
        secret=os.environ.get("STUDIO_BROWSER_STATE_SECRET", "world-r1-studio-evaluator"),
    )
    battle = gr.State(_empty_battle())

    with gr.Row():
        study = gr.Dropdown(choices=studies, value=studies[-1] if studies else None, label="Study", scale=4)
        refresh_studies = gr.Button("↻ studies", scale=1, size="sm")

    with gr.Tabs():
        with gr.Tab("Vote"):
            next_btn = gr.Button("Next pair", variant="primary")
            prompt_md = gr.Markdown("Choose a study and press **Next pair**.")
            with gr.Row(equal_height=True):
                with gr.Column():
                    left_video = gr.Video(label="Left", autoplay=True, interactive=False, elem_id="ab-left",
                                          elem_classes=["ab-clip"], buttons=[])
                    left_note = gr.Markdown("")
                with gr.Column():
                    right_video = gr.Video(label="Right", autoplay=True, interactive=False, elem_id="ab-right",
                                           elem_classes=["ab-clip"], buttons=[])
                    right_note = gr.Markdown("")
            play_md = gr.Markdown("")
            radios = [gr.Radio(ANSWER_CHOICES, label=CRITERION_LABELS[c], interactive=False) for c in CRITERIA]
            vote_btn = gr.Button("Submit vote", variant="primary", interactive=False)
            reveal_md = gr.Markdown("")

        with gr.Tab("Results"):
            with gr.Row():
                exclude_careless = gr.Checkbox(label="Exclude careless evaluators (failed attention checks, "
                                                     "always the same side, or faster than the clips play)")
                results_password = gr.Textbox(label="Admin password", type="password",
                                              placeholder="only when the studio is exposed")
                results_btn = gr.Button("Compute results", variant="primary")
            summary_md = gr.Markdown("")
            with gr.Row():
                win_plot = gr.Plot(label="Win rates")
                outcome_plot = gr.Plot(label="Answers")
            pairwise_df = gr.Dataframe(label="Per criterion: win rate of the first system (A) over the second (B), "
                                             "Wilson 95 % CI, ties, both bad, sign test, bootstrap over prompts",
                                       interactive=False)
            with gr.Row():
                category_plot = gr.Plot(label="By category")
                bt_plot = gr.Plot(label="Bradley–Terry")
            category_df = gr.Dataframe(label="Per category", interactive=False)
            bt_df = gr.Dataframe(label="Bradley–Terry ratings (log-strength θ, bootstrap 95 % CI over prompts)",
                                 interactive=False)
            bias_df = gr.Dataframe(label="Left-position bias", interactive=False)
            metrics_df = gr.Dataframe(label="Automatic metrics per system, and Spearman agreement with votes",
                                      interactive=False)
            evaluators_plot = gr.Plot(label="Evaluators")
            evaluators_df = gr.Dataframe(label="Votes per evaluator: attention checks, side preference (binomial "
                                               "test), time to vote, flags", interactive=False)
            with gr.Row():
                csv_file = gr.File(label="Raw votes (CSV)")
                json_file = gr.File(label="Raw votes (JSON)")

    # --- vote page ---
    def on_next(study_name: str | None, stored_id: str, state: dict, profile: gr.OAuthProfile | None):
        if not study_name:
            raise gr.Error("Choose a study first.")
        stored_id = stored_id or new_browser_evaluator_id()
        try:
            evaluator, source = resolve_evaluator(profile.username if profile else None, stored_id)
            result = service.next_battle(study_name, evaluator, source)
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None
        closed = [gr.update(value=None, interactive=False) for _ in CRITERIA]
        if result["done"]:
            return (_empty_battle(), None, None, "", "", f"**{result['message']}** ({result['votes_done']} votes)",
                    "", *closed, gr.update(interactive=False), "", stored_id)
        header = {k: result[k] for k in ("number", "cap", "category", "prompt")}
        state = {**_empty_battle(), "battle_id": result["battle_id"], "evaluator": evaluator, "header": header}
        played = service.viewings.played(result["battle_id"])  # a reload keeps what was watched
        opened = [gr.update(value=None, interactive=True) for _ in CRITERIA]
        return (state, result["left_video"], result["right_video"], _side_note("left", played),
                _side_note("right", played), _header(header, result["votes_done"]),
                _play_note(played), *opened, gr.update(interactive=played == {"left", "right"}), "", stored_id)

    next_btn.click(
        on_next, [study, browser_id, battle],
        [battle, left_video, right_video, left_note, right_note, prompt_md, play_md, *radios, vote_btn, reveal_md,
         browser_id],
        api_visibility="private", **CONCURRENCY,
    )

    def mark(side: str, event: str):
        # The two clips end ~10 ms apart and these handlers run at the same time: each writes only
        # its own side's note, and only the one that completes the pair opens the vote (nothing
        # here ever closes it, so a late answer cannot lock it again).
        def handler(state: dict):
            if state.get("battle_id") is None or state.get("voted"):
                return gr.update(), gr.update(), gr.update()
            played = service.mark_viewing(state["battle_id"], side, event)
            if played == {"left", "right"}:
                return gr.update(interactive=True), _side_note(side, played), _play_note(played)
            return gr.update(), _side_note(side, played), gr.update()
        return handler

    for side, video, note in (("left", left_video, left_note), ("right", right_video, right_note)):
        video.play(mark(side, "started"), battle, [vote_btn, note, play_md], api_visibility="private",
                   queue=False, show_progress="hidden")
        video.end(mark(side, "ended"), battle, [vote_btn, note, play_md], api_visibility="private",
                  queue=False, show_progress="hidden")
        video.end(None, js=_restart_js(f"ab-{side}"), api_visibility="private")
        video.play(None, js=_FIT_JS, api_visibility="private")

    def on_vote(state: dict, stored_id: str, a3d: str | None, camera: str | None, overall: str | None,
                profile: gr.OAuthProfile | None):
        if state.get("battle_id") is None:
            raise gr.Error("Press Next pair to get a pair first.")
        if state.get("voted"):
            raise gr.Error("This pair already has your vote; press Next pair.")
        if service.viewings.played(state["battle_id"]) != {"left", "right"}:
            raise gr.Error("Watch both clips to the end before voting.")
        if not overall:
            raise gr.Error("The overall answer is required.")
        try:
            evaluator, _ = resolve_evaluator(profile.username if profile else None, stored_id)
            receipt = service.vote(state["battle_id"], evaluator, answers_from_fields(overall, a3d, camera))
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None
        reveal = f"Left was **{receipt['left_system']}**, right was **{receipt['right_system']}**."
        if receipt["attention_check"]:
            reveal += " This pair was an attention check."
        if not receipt["recorded"]:
            reveal += " Your earlier vote on this pair was kept."
        locked = [gr.update(value=receipt["answers"][c], interactive=False) for c in CRITERIA]
        return ({**state, "voted": True}, gr.update(interactive=False), *locked,
                reveal + " Press **Next pair** to go on.", _header(state["header"], receipt["votes_done"]))

    vote_btn.click(on_vote, [battle, browser_id, *radios], [battle, vote_btn, *radios, reveal_md, prompt_md],
                   api_visibility="private", **CONCURRENCY)

    def refresh(current: str | None):
        names = service.list_studies()
        return gr.update(choices=names, value=current if current in names else (names[-1] if names else None))

    refresh_studies.click(refresh, study, study, api_visibility="private")
    # On every page load too (no inputs: load only): the choices above are those of when the app was built.
    gr.on(None, lambda: refresh(None), None, study, api_visibility="private", show_progress="hidden")

    # --- results page ---
    def on_results(study_name: str | None, exclude: bool, password: str, profile: gr.OAuthProfile | None):
        if not study_name:
            raise gr.Error("Choose a study first.")
        try:
            check_admin(password, dict(profile) if profile else None)
            summary = service.results(study_name, exclude_careless=exclude)
            # A fresh temp folder: Gradio copies returned files from there, never from the data dir.
            csv_path, json_path = service.export(study_name, tempfile.mkdtemp(prefix="study-export-"))
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None
        att = summary["attention"]
        text = headline_text(summary) + "\n\n" + (
            f"**{summary['n_votes']} votes** ({summary['n_pair_votes']} on pairs used, "
            f"{att['checks']} attention checks, {att['failures']} failed) from "
            f"{len(summary['evaluators'])} evaluators.")
        flagged = [f"{e['evaluator']} ({e['flags']})" for e in summary["evaluators"] if e["careless"]]
        if flagged:
            text += f" Flagged as careless: {', '.join(flagged)}."
        if summary["excluded_careless"]:
            text += f" Excluded: {len(summary['excluded_careless'])}."
        metric_rows = summary["clip_metrics"] + summary["metric_agreement"]
        return (text, fig_win_rates(summary), fig_outcomes(summary), _table(summary["pairwise"]),
                fig_categories(summary), fig_bradley_terry(summary) if summary["bradley_terry"] else None,
                _table(summary["by_category"]), _table(summary["bradley_terry"]), _table(summary["position_bias"]),
                _table(metric_rows), fig_evaluators(summary), _table(summary["evaluators"]),
                str(csv_path), str(json_path))

    results_btn.click(
        on_results, [study, exclude_careless, results_password],
        [summary_md, win_plot, outcome_plot, pairwise_df, category_plot, bt_plot, category_df, bt_df, bias_df,
         metrics_df, evaluators_plot, evaluators_df, csv_file, json_file],
        api_visibility="private",
    )

    # --- API (gradio_client, plain HTTP) ---
    def ab_next(study: str, evaluator: str, profile: gr.OAuthProfile | None = None) -> dict:
        """Deal the evaluator's next blind pair: {"done": false, "battle_id", "prompt", "left_video",
        "right_video", ...} or {"done": true, "message"}. System names are not included; the videos
        are URLs relative to the app's URL (urljoin(app_url, left_video))."""
        try:
            evaluator_id, source = resolve_evaluator(profile.username if profile else None, evaluator)
            result = service.next_battle(study, evaluator_id, source)
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None
        if not result["done"]:
            result = {**result, "left_video": served_url(result["left_video"]),
                      "right_video": served_url(result["right_video"])}
        return result

    def ab_vote(battle_id: int, evaluator: str, overall: str, consistency_3d: str = "", camera: str = "",
                profile: gr.OAuthProfile | None = None) -> dict:
        """Vote on a battle (answers: left, right, both_good, both_bad; overall required).
        Idempotent: a repeated call returns the stored vote with recorded=false."""
        try:
            evaluator_id, _ = resolve_evaluator(profile.username if profile else None, evaluator)
            return service.vote(battle_id, evaluator_id, answers_from_fields(overall, consistency_3d, camera))
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None

    def ab_results(study: str, exclude_careless: bool = False, admin_password: str = "",
                   profile: gr.OAuthProfile | None = None) -> dict:
        """The study's statistics as JSON (the results page's numbers, evaluator ids included).
        Admin only when the studio is exposed: pass admin_password or sign in as an admin."""
        try:
            check_admin(admin_password, dict(profile) if profile else None)
            return service.results(study, exclude_careless=check_flag(exclude_careless, "exclude_careless"))
        except USER_ERRORS as exc:
            raise to_gradio_error(exc, "study request", not_found=(KeyError,)) from None

    # queue=False: a vote is one short transaction, and the queue's SSE round trips cost more
    # than the vote itself; these also answer a plain POST to /gradio_api/run/<name>.
    gr.api(ab_next, api_name="ab_next", queue=False)
    gr.api(ab_vote, api_name="ab_vote", queue=False)
    gr.api(ab_results, api_name="ab_results", concurrency_limit=2)
    return study


def _side_note(side: str, played: frozenset[str]) -> str:
    return f"✓ {side} clip watched" if side in played else ""


def _play_note(played: frozenset[str]) -> str:
    if played == {"left", "right"}:
        return "Both clips watched: you can vote."
    return "Watch both clips to the end once; voting opens then."


def build_standalone_app(service: StudyService) -> gr.Blocks:
    with gr.Blocks(title="World-R1 Studio · A/B study") as demo:
        with gr.Tab("A/B study"):
            build_study_tab(service)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The A/B study tab on its own (tests, load script).")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--data-dir", default=None, help="default: $STUDIO_DATA_DIR or ./data")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    service = StudyService(data_dir=args.data_dir)
    demo = build_standalone_app(service)
    demo.queue(default_concurrency_limit=8).launch(
        server_name=args.host, server_port=args.port,
        **launch_options(service.data_dir, css=STUDY_CSS),
    )


if __name__ == "__main__":
    main()
