"""The Training tab in a real browser: the log tail shows its newest lines, a run that fails in the
background raises a toast with its reason, and deleting a run asks first."""
from __future__ import annotations

import json
import time


def fake_run(services, name: str, log_lines: int = 0) -> None:
    run = services.training.jobs.runs_dir / name
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"name": name, "preset": "tinyworld-cpu", "status": "finished",
                                              "created": time.time(), "returncode": 0}))
    (run / "train.log").write_text("".join(f"line {i}\n" for i in range(log_lines)))


def select_run(page, name: str) -> None:
    page.get_by_label("Selected run").fill(name)
    page.keyboard.press("Enter")


def test_the_log_tail_is_scrolled_to_its_newest_line(page, studio):
    fake_run(studio["services"], "e2e-log", log_lines=200)
    page.get_by_role("tab", name="Training").click()
    select_run(page, "e2e-log")
    page.wait_for_function("() => (document.querySelector('#train-log textarea')?.value || '').includes('line 199')")
    page.wait_for_timeout(500)
    gap = page.eval_on_selector("#train-log textarea", "t => t.scrollHeight - t.clientHeight - t.scrollTop")
    assert gap <= 5, f"the log box is {gap} px above its last line"


def test_a_background_failure_raises_a_toast_with_its_reason(page, studio):
    page.get_by_role("tab", name="Training").click()
    page.wait_for_timeout(2500)  # a timer tick has seen the runs as they are
    services = studio["services"]
    # Valid for the studio's checks, but the trainer cannot load this scorer: it fails at start-up.
    services.training.start("e2e-fails", "tinyworld-cpu", {}, "scorer=no-such-clip-model\nepochs=1")
    toast = page.get_by_text("Run e2e-fails failed")
    toast.wait_for(timeout=180_000)
    assert "scorer" in page.inner_text("body")


def test_deleting_a_run_asks_first(page, studio):
    fake_run(studio["services"], "e2e-delete")
    page.get_by_role("tab", name="Training").click()
    select_run(page, "e2e-delete")
    page.wait_for_timeout(500)
    page.once("dialog", lambda d: d.dismiss())
    page.get_by_role("button", name="Delete run").click()
    page.wait_for_timeout(1500)
    assert (studio["services"].training.jobs.runs_dir / "e2e-delete").is_dir()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete run").click()
    deadline = time.time() + 20
    while (studio["services"].training.jobs.runs_dir / "e2e-delete").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not (studio["services"].training.jobs.runs_dir / "e2e-delete").exists()
