"""The study tab: its endpoints in-process through gradio_client (/ab_next, /ab_vote, /ab_results),
and its page handlers called as Gradio calls them (same state snapshot for concurrent events)."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from studio.study.battles import pregenerate  # noqa: E402
from studio.study.media import generate_synthetic  # noqa: E402
from studio.app.study_service import StudyService  # noqa: E402
from studio.ui.serving import launch_options  # noqa: E402
from studio.ui.study_tab import STUDY_CSS, build_standalone_app, build_study_tab  # noqa: E402


def test_api_deals_blind_pairs_and_votes_idempotently(data_dir, spec, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from studio.study.media import generate_synthetic

    service = StudyService(data_dir=data_dir, generate=generate_synthetic, app_version="test")
    service.create_study(spec(attention_rate=0.0))
    service.start_pregeneration("s1").join(timeout=300)
    demo = build_standalone_app(service)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                **launch_options(service.data_dir, css=STUDY_CSS))
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", download_files=False, verbose=False)
        battle = client.predict("s1", "api:tester", api_name="/ab_next")
        assert not battle["done"] and "baseline" not in str(battle) and "tuned" not in str(battle)
        receipt = client.predict(battle["battle_id"], "api:tester", "left", "", "both_bad", api_name="/ab_vote")
        assert receipt["recorded"] and {receipt["left_system"], receipt["right_system"]} == {"baseline", "tuned"}
        again = client.predict(battle["battle_id"], "api:tester", "right", api_name="/ab_vote")
        assert not again["recorded"] and again["answers"]["overall"] == "left"
        with pytest.raises(Exception, match="another evaluator"):
            client.predict(battle["battle_id"], "api:someone-else", "left", api_name="/ab_vote")
        with pytest.raises(Exception, match="reserved"):
            client.predict("s1", "hf:impostor", api_name="/ab_next")
        results = client.predict("s1", False, api_name="/ab_results")
        overall = next(r for r in results["pairwise"] if r["criterion"] == "overall")
        assert results["n_votes"] == 1 and overall["n_votes"] == 1
    finally:
        demo.close()


def handlers(demo: gr.Blocks) -> dict[tuple[str, str, str], object]:
    """(function name, component elem_id, label or button text, event) -> the BlockFunction Gradio would run."""
    found = {}
    for fn in demo.fns.values():
        for block_id, event in fn.targets:
            block = demo.blocks.get(block_id)
            key = (getattr(block, "elem_id", None) or getattr(block, "label", None) or getattr(block, "value", None)
                   or type(block).__name__)
            found[(fn.name, str(key), event)] = fn
    return found


def output_of(fn, values, component) -> object:
    return values[[o._id for o in fn.outputs].index(component._id)]


@pytest.fixture
def voting_page(data_dir, spec, tmp_path):
    service = StudyService(data_dir=data_dir, served_dir=tmp_path / "served", app_version="test")
    service.create_study(spec(attention_rate=0.0, max_votes_per_evaluator=20))
    pregenerate(service.engine, service.data_dir, "s1", generate_synthetic)
    demo = build_standalone_app(service)
    return demo, handlers(demo), service


def deal(page, evaluator: str = "anon:page") -> tuple[dict, tuple]:
    demo, fns, _ = page
    on_next = fns[("on_next", "Next pair", "click")]
    out = on_next.fn("s1", evaluator, {}, None)
    assert out[0]["battle_id"] is not None
    return out[0], out


def test_both_clips_ending_together_open_the_vote_and_nothing_closes_it_again(voting_page):
    demo, fns, service = voting_page
    vote_btn = next(b for b in demo.blocks.values() if getattr(b, "value", None) == "Submit vote")
    for i in range(30):
        state, _ = deal(voting_page, f"anon:page-{i % 5}")  # 5 evaluators × 6 pairs
        for side in ("left", "right"):
            fns[("handler", f"ab-{side}", "play")].fn(state)
        ends = [fns[("handler", f"ab-{side}", "end")] for side in ("left", "right")]
        barrier, answers = threading.Barrier(2), []

        def run(fn):
            barrier.wait()
            answers.append(output_of(fn, fn.fn(state), vote_btn))  # both get the same state, as in Gradio

        threads = [threading.Thread(target=run, args=(fn,)) for fn in ends]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        updates = [a for a in answers if isinstance(a, dict) and "interactive" in a]
        assert [u["interactive"] for u in updates] == [True], answers  # opened once, never closed
        # A clip ending again (it loops) does not close the vote either.
        again = output_of(ends[0], ends[0].fn(state), vote_btn)
        assert not (isinstance(again, dict) and again.get("interactive") is False)
        on_vote = fns[("on_vote", "Submit vote", "click")]
        on_vote.fn(state, f"anon:page-{i % 5}", None, None, "left", None)


def test_the_vote_count_line_is_updated_after_a_vote(voting_page):
    demo, fns, _ = voting_page
    state, dealt = deal(voting_page)
    on_next = fns[("on_next", "Next pair", "click")]
    prompt_md = next(o for o, v in zip(on_next.outputs, dealt) if isinstance(v, str) and v.startswith("**Pair"))
    assert "0/20 votes" in output_of(on_next, dealt, prompt_md)
    for side in ("left", "right"):
        fns[("handler", f"ab-{side}", "play")].fn(state)
        fns[("handler", f"ab-{side}", "end")].fn(state)
    on_vote = fns[("on_vote", "Submit vote", "click")]
    voted = on_vote.fn(state, "anon:page", None, None, "left", None)
    assert "1/20 votes" in output_of(on_vote, voted, prompt_md)


def test_a_vote_before_both_clips_played_is_refused(voting_page):
    _, fns, _ = voting_page
    state, _ = deal(voting_page)
    fns[("handler", "ab-left", "play")].fn(state)
    fns[("handler", "ab-left", "end")].fn(state)
    fns[("handler", "ab-right", "end")].fn(state)  # an end without a play
    with pytest.raises(gr.Error, match="Watch both clips"):
        fns[("on_vote", "Submit vote", "click")].fn(state, "anon:page", None, None, "left", None)


def test_a_created_study_appears_in_the_study_list_at_once(data_dir, tmp_path):
    from studio.ui.study_admin import build_study_admin

    service = StudyService(data_dir=data_dir, served_dir=tmp_path / "served", generate=generate_synthetic)
    services = SimpleNamespace(study=service, system_spec=lambda system: ("synthetic", None))
    with gr.Blocks() as demo:
        dropdown = build_study_tab(service)
        build_study_admin(services, dropdown)
    create = next(fn for fn in demo.fns.values() if fn.name == "on_create")
    out = create.fn("fresh-study", "a red cube\na blue cone", "0", "baseline, tuned", 5, 0.0, "", None)
    listed = output_of(create, out, dropdown)
    assert "fresh-study" in listed["choices"][0] or ("fresh-study", "fresh-study") in listed["choices"]
    assert listed["value"] == "fresh-study"
    service.jobs["fresh-study"].join(timeout=120)
    load = next(fn for fn in demo.fns.values() if any(event == "load" for _, event in fn.targets))
    assert load.fn()["value"] == "fresh-study"  # a page opened later lists it too


def test_results_on_the_page_need_admin_rights_when_exposed(voting_page, monkeypatch):
    _, fns, _ = voting_page
    on_results = fns[("on_results", "Compute results", "click")]
    monkeypatch.setenv("STUDIO_EXPOSED", "1")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "s3cret")
    with pytest.raises(gr.Error, match="admin only"):
        on_results.fn("s1", False, "", None)
    out = on_results.fn("s1", False, "s3cret", None)
    assert "0 votes" in out[0]
    csv_path = out[-2]
    assert not csv_path.startswith(str(voting_page[2].data_dir))  # exports go out from a temp folder


def test_the_clips_are_shown_with_square_pixels():
    assert "image-rendering: pixelated" in STUDY_CSS and ".ab-clip video" in STUDY_CSS
    from app import launch_kwargs

    assert STUDY_CSS in launch_kwargs("data")["css"]
