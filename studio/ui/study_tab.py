"""A/B study tab: wiring only; the handlers are `studio.study.service.StudyService`.

app.py calls `build_study_tab(services)` inside `with gr.Tab(...)`, where `services` is a
`StudyService` or has one as `.study`. The app must be launched with
`allowed_paths=[service.data_dir]` when the data dir is outside the working directory and
the temp dir (e.g. /data on a Space), or gradio refuses to serve the clips.

Endpoints for gradio_client: /ab_next, /ab_vote, /ab_results (plain JSON in and out);
/ab_next and /ab_vote also answer a plain HTTP POST to /gradio_api/run/ab_next (body
{"data": [...]}) without the queue.

Run alone (the load script does, until app.py is ready):
    python -m studio.ui.study_tab --port 7861 --data-dir ./data
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from studio.study.db import CRITERIA
from studio.study.service import StudyService, answers_from_fields, new_browser_evaluator_id, resolve_evaluator
from studio.study.stats import fig_bradley_terry, fig_categories, fig_evaluators, fig_outcomes, fig_win_rates

ANSWER_CHOICES = [("Left better", "left"), ("Right better", "right"), ("Both good", "both_good"), ("Both bad", "both_bad")]
CRITERION_LABELS = {
    "3d_consistency": "3D consistency: which clip keeps a stable, solid 3D world?",
    "camera": "Camera: which clip's camera follows the prompt?",
    "overall": "Overall: which clip is better? (required)",
}
# Study votes are cheap DB transactions; let several run at once instead of gradio's default of 1.
CONCURRENCY = dict(concurrency_limit=8, concurrency_id="ab_study")
USER_ERRORS = (ValueError, KeyError, PermissionError)


def _restart_js(elem_id: str) -> str:
    # The clip loops by restarting on "ended": with the <video loop> attribute the browser
    # never fires "ended", and that event is how we know a clip was watched once.
    return f"() => {{ const v = document.querySelector('#{elem_id} video'); if (v) {{ v.currentTime = 0; v.play(); }} }}"


def _empty_battle() -> dict:
    return {"battle_id": None, "evaluator": None, "started": [], "played": [], "voted": False}


def _table(rows: list[dict], columns: list[str] | None = None):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns) if rows or columns else pd.DataFrame()
    return frame.round(4)


def build_study_tab(services) -> None:
    """Build the vote and results pages inside the caller's Blocks context."""
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
                left_video = gr.Video(label="Left", autoplay=True, interactive=False, elem_id="ab-left", buttons=[])
                right_video = gr.Video(label="Right", autoplay=True, interactive=False, elem_id="ab-right", buttons=[])
            play_md = gr.Markdown("")
            radios = [gr.Radio(ANSWER_CHOICES, label=CRITERION_LABELS[c], interactive=False) for c in CRITERIA]
            vote_btn = gr.Button("Submit vote", variant="primary", interactive=False)
            reveal_md = gr.Markdown("")

        with gr.Tab("Results"):
            with gr.Row():
                exclude_careless = gr.Checkbox(label="Exclude careless evaluators (failed attention checks)")
                results_btn = gr.Button("Compute results", variant="primary")
            summary_md = gr.Markdown("")
            with gr.Row():
                win_plot = gr.Plot(label="Win rates")
                outcome_plot = gr.Plot(label="Answers")
            pairwise_df = gr.Dataframe(label="Per criterion: win rate (Wilson 95 % CI), ties, both bad, sign test, "
                                             "bootstrap over prompts", interactive=False)
            with gr.Row():
                category_plot = gr.Plot(label="By category")
                bt_plot = gr.Plot(label="Bradley–Terry")
            category_df = gr.Dataframe(label="Per category", interactive=False)
            bt_df = gr.Dataframe(label="Bradley–Terry ratings (more than 2 systems)", interactive=False)
            bias_df = gr.Dataframe(label="Left-position bias", interactive=False)
            metrics_df = gr.Dataframe(label="Automatic metrics per system, and Spearman agreement with votes",
                                      interactive=False)
            evaluators_plot = gr.Plot(label="Evaluators")
            evaluators_df = gr.Dataframe(label="Votes per evaluator, attention checks", interactive=False)
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
            raise gr.Error(str(exc)) from exc
        closed = [gr.update(value=None, interactive=False) for _ in CRITERIA]
        if result["done"]:
            return (_empty_battle(), None, None, f"**{result['message']}** ({result['votes_done']} votes)", "",
                    *closed, gr.update(interactive=False), "", stored_id)
        state = {**_empty_battle(), "battle_id": result["battle_id"], "evaluator": evaluator}
        prompt = (f"**Pair {result['number']}** · {result['votes_done']}/{result['cap']} votes · "
                  f"*{result['category']}* prompt:\n\n> {result['prompt']}")
        opened = [gr.update(value=None, interactive=True) for _ in CRITERIA]
        return (state, result["left_video"], result["right_video"], prompt,
                "Watch both clips to the end once; voting opens then.", *opened,
                gr.update(interactive=False), "", stored_id)

    next_btn.click(
        on_next, [study, browser_id, battle],
        [battle, left_video, right_video, prompt_md, play_md, *radios, vote_btn, reveal_md, browser_id],
        api_visibility="private", **CONCURRENCY,
    )

    def mark(side: str, key: str):
        def handler(state: dict):
            if state.get("battle_id") is None or state.get("voted"):
                return state, gr.update(), gr.update()
            if key == "played" and side not in state["started"]:
                return state, gr.update(), gr.update()  # an "end" without a "play" is not a viewing
            if side not in state[key]:
                state = {**state, key: [*state[key], side]}
            both = {"left", "right"} <= set(state["played"])
            note = "Both clips watched: you can vote." if both else (
                f"Watched: {', '.join(state['played']) or 'none yet'}.")
            return state, gr.update(interactive=both), note
        return handler

    for side, video in (("left", left_video), ("right", right_video)):
        video.play(mark(side, "started"), battle, [battle, vote_btn, play_md], api_visibility="private",
                   queue=False, show_progress="hidden")
        video.end(mark(side, "played"), battle, [battle, vote_btn, play_md], api_visibility="private",
                  queue=False, show_progress="hidden")
        video.end(None, js=_restart_js(f"ab-{side}"), api_visibility="private")

    def on_vote(state: dict, stored_id: str, a3d: str | None, camera: str | None, overall: str | None,
                profile: gr.OAuthProfile | None):
        if state.get("battle_id") is None:
            raise gr.Error("Press Next pair to get a pair first.")
        if not {"left", "right"} <= set(state["played"]):
            raise gr.Error("Watch both clips to the end before voting.")
        if not overall:
            raise gr.Error("The overall answer is required.")
        try:
            evaluator, _ = resolve_evaluator(profile.username if profile else None, stored_id)
            receipt = service.vote(state["battle_id"], evaluator, answers_from_fields(overall, a3d, camera))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc
        reveal = f"Left was **{receipt['left_system']}**, right was **{receipt['right_system']}**."
        if receipt["attention_check"]:
            reveal += " This pair was an attention check."
        if not receipt["recorded"]:
            reveal += " Your earlier vote on this pair was kept."
        locked = [gr.update(value=receipt["answers"][c], interactive=False) for c in CRITERIA]
        return ({**state, "voted": True}, gr.update(interactive=False), *locked,
                reveal + f" ({receipt['votes_done']}/{receipt['cap']} votes) Press **Next pair** to go on.")

    vote_btn.click(on_vote, [battle, browser_id, *radios], [battle, vote_btn, *radios, reveal_md],
                   api_visibility="private", **CONCURRENCY)

    refresh_studies.click(lambda: gr.update(choices=service.list_studies()), None, study, api_visibility="private")

    # --- results page ---
    def on_results(study_name: str | None, exclude: bool):
        if not study_name:
            raise gr.Error("Choose a study first.")
        try:
            summary = service.results(study_name, exclude_careless=exclude)
            csv_path, json_path = service.export(study_name)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc
        att = summary["attention"]
        text = (f"**{summary['n_votes']} votes** ({summary['n_pair_votes']} on pairs used, "
                f"{att['checks']} attention checks, {att['failures']} failed) from "
                f"{len(summary['evaluators'])} evaluators.")
        if summary["excluded_careless"]:
            text += f" Excluded as careless: {', '.join(summary['excluded_careless'])}."
        has_bt = bool(summary["bradley_terry"])
        metric_rows = summary["clip_metrics"] + summary["metric_agreement"]
        return (text, fig_win_rates(summary), fig_outcomes(summary), _table(summary["pairwise"]),
                fig_categories(summary), fig_bradley_terry(summary) if has_bt else None,
                _table(summary["by_category"]), _table(summary["bradley_terry"]), _table(summary["position_bias"]),
                _table(metric_rows), fig_evaluators(summary), _table(summary["evaluators"]),
                str(csv_path), str(json_path))

    results_btn.click(
        on_results, [study, exclude_careless],
        [summary_md, win_plot, outcome_plot, pairwise_df, category_plot, bt_plot, category_df, bt_df, bias_df,
         metrics_df, evaluators_plot, evaluators_df, csv_file, json_file],
        api_visibility="private",
    )

    # --- API (gradio_client) ---
    def ab_next(study: str, evaluator: str, profile: gr.OAuthProfile | None = None) -> dict:
        """Deal the evaluator's next blind pair: {"done": false, "battle_id", "prompt", "left_video",
        "right_video", ...} or {"done": true, "message"}. System names are not included."""
        try:
            evaluator_id, source = resolve_evaluator(profile.username if profile else None, evaluator)
            return service.next_battle(study, evaluator_id, source)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc

    def ab_vote(battle_id: int, evaluator: str, overall: str, consistency_3d: str = "", camera: str = "",
                profile: gr.OAuthProfile | None = None) -> dict:
        """Vote on a battle (answers: left, right, both_good, both_bad; overall required).
        Idempotent: a repeated call returns the stored vote with recorded=false."""
        try:
            evaluator_id, _ = resolve_evaluator(profile.username if profile else None, evaluator)
            return service.vote(int(battle_id), evaluator_id, answers_from_fields(overall, consistency_3d, camera))
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc

    def ab_results(study: str, exclude_careless: bool = False) -> dict:
        """The study's statistics as JSON (the results page's numbers)."""
        try:
            return service.results(study, exclude_careless=exclude_careless)
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from exc

    # queue=False: a vote is one short transaction, and the queue's SSE round trips cost more
    # than the vote itself; these also answer a plain POST to /gradio_api/run/<name>.
    gr.api(ab_next, api_name="ab_next", queue=False)
    gr.api(ab_vote, api_name="ab_vote", queue=False)
    gr.api(ab_results, api_name="ab_results", concurrency_limit=2)


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
        server_name=args.host, server_port=args.port, allowed_paths=[str(service.data_dir)], show_error=True,
    )


if __name__ == "__main__":
    main()
