"""The studio in a real browser: generate & compare, a full A/B session, a training run from the tab.

Screenshots land in test-artifacts/. Run alone with: pytest tests/e2e -q
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytestmark = pytest.mark.e2e


def _canvas_has_content(element) -> bool:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(element.screenshot())).convert("RGB")).astype(float)
    return img.std() > 3.0 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_generate_and_compare_shows_two_videos_the_paths_and_rendered_point_clouds(page, studio, tuned_lora):
    page.fill("#gen-lora textarea, #gen-lora input", tuned_lora)
    page.click("#gen-go")
    page.wait_for_selector("#gen-baseline video[src]", timeout=180_000)
    page.wait_for_selector("#gen-tuned video[src]", timeout=60_000)
    page.wait_for_selector("#gen-paths .js-plotly-plot", timeout=60_000)
    assert page.locator("#gen-paths .scatterlayer, #gen-paths .gl-container, #gen-paths canvas").count() > 0
    for side in ("baseline", "tuned"):
        canvas = page.wait_for_selector(f"#gen-pc-{side} canvas", timeout=60_000)
        deadline = time.time() + 20
        while not _canvas_has_content(canvas) and time.time() < deadline:
            page.wait_for_timeout(500)
        assert _canvas_has_content(canvas), f"{side} point cloud canvas is blank"
    table = page.inner_text("#gen-metrics")
    for label in ("Depth-consistency L1", "Reconstruction PSNR", "Trajectory error", "CLIP score", "Reward S_traj"):
        assert label in table
    # 64-px clips drawn at an integer scale with crisp pixels, not blurred by the browser
    page.wait_for_function("() => document.querySelector('#gen-tuned video').videoWidth > 0")
    for side in ("baseline", "tuned"):
        rendering, natural, width = page.eval_on_selector(
            f"#gen-{side} video", "v => [getComputedStyle(v).imageRendering, v.videoWidth, v.getBoundingClientRect().width]")
        assert rendering == "pixelated" and natural == 64 and width == 512, (rendering, natural, width)


def test_a_full_ab_session_casts_votes_and_the_results_count_them(page, studio, tuned_lora):
    from studio.study.battles import PromptSpec, StudySpec

    services = studio["services"]
    services.training.use_lora(tuned_lora)
    name = "e2e-study"
    services.study.create_study(StudySpec(
        name=name, prompts=[PromptSpec("Camera pan left. A red cube on a checkered floor.", "camera"),
                            PromptSpec("Camera push in. A blue sphere on a tiled floor.", "camera")],
        seeds=[0], systems=["baseline", "tuned"], max_votes_per_evaluator=3, attention_rate=0.0))
    job = services.study.start_pregeneration(name)
    job._thread.join(timeout=240)
    assert job.error is None and services.study.progress(name)["ready"] == 2 * 2
    page.get_by_role("tab", name="A/B study").click()
    page.get_by_role("button", name="↻ studies").click()
    page.wait_for_timeout(500)
    page.get_by_label("Study").first.click()
    page.get_by_role("option", name=name).click()
    for _ in range(2):
        page.get_by_role("button", name="Next pair").click()
        page.wait_for_selector("#ab-left video[src]")
        page.wait_for_selector("#ab-right video[src]")
        vote = page.get_by_role("button", name="Submit vote")
        for sel in ("#ab-left video", "#ab-right video"):  # play both once, as a person would
            page.eval_on_selector(sel, "v => { v.muted = true; v.currentTime = 0; return v.play(); }")
        page.wait_for_function("() => !document.querySelector('button:disabled') || true")
        deadline = time.time() + 60
        while not vote.is_enabled() and time.time() < deadline:
            page.wait_for_timeout(300)
        assert vote.is_enabled(), "vote button did not open after both clips played"
        # The three criteria's radios appear in order: 3D consistency, camera, overall.
        page.locator("label:has-text('Left better')").nth(0).click()
        page.locator("label:has-text('Left better')").nth(2).click()
        vote.click()
        page.wait_for_selector("text=Left was")
    page.get_by_role("tab", name="Results").click()
    page.get_by_role("button", name="Compute results").click()
    page.wait_for_selector("text=2 votes")
    assert services.study.results(name)["n_votes"] == 2
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3")  # results charts drawn


def test_a_tiny_training_run_starts_from_the_tab_and_its_curve_appears(page, studio):
    page.get_by_role("tab", name="Training").click()
    page.get_by_label("Run name").fill("e2e-run")
    page.get_by_label("More overrides (key=value, one per line)").fill(
        "epochs=2\ngroup_size=2\nper_device_batch_size=2\nnum_batches_per_epoch=1\ntrain_batch_size=2\n"
        "steps_per_epoch=1\nnum_steps=4\neval_every=0\nnum_eval_clips=1\ntorch_threads=1")
    page.get_by_role("button", name="Launch run").click()
    page.get_by_text("e2e-run").last.wait_for()
    deadline = time.time() + 420
    while time.time() < deadline:
        state = studio["services"].training.jobs.get("e2e-run")
        if state.status not in ("queued", "running"):
            break
        time.sleep(2)
    assert studio["services"].training.jobs.get("e2e-run").status == "finished", \
        studio["services"].training.jobs.log_tail("e2e-run")
    page.wait_for_timeout(3000)  # a timer tick redraws the curves
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() > 0
    # Its checkpoint goes into the tuned slot from the tab.
    page.get_by_role("button", name="Load into tuned slot").click()
    slot = page.get_by_role("textbox", name="Tuned slot", exact=True)
    page.wait_for_function("(el) => el.value.includes('e2e-run')", arg=slot.element_handle(), timeout=15000)
    assert studio["services"].training.tuned_lora().endswith("pytorch_lora_weights.safetensors")
