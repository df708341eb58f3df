"""What the running studio exposes over real HTTP: no file of the data dir, no server path in an
API response, 4xx with a message for bad input, and (in Chromium) the A/B clips served from their
own folder, crisp at an integer scale, with voting opened once both clips played."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from studio.study.battles import PromptSpec, StudySpec, pregenerate
from studio.study.media import generate_synthetic

REPO = Path(__file__).resolve().parents[2]
STUDY = "exposure-study"
SERVED_NAME = re.compile(r"gradio_api/file=(/[^\"']+/study-media/[0-9a-f]{32}\.mp4)")


def post(base: str, name: str, data: list) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/gradio_api/run/{name}", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def get(base: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{base}/{path}", timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def upload_folder() -> Path:
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def assert_no_server_path(text: str, data_dir: Path) -> None:
    """No data dir or repository path, and every absolute path is a served clip in Gradio's upload folder."""
    for root in {str(data_dir), str(data_dir.resolve()), str(REPO)}:
        assert root not in text
    assert "studio.db" not in text
    for path in re.findall(r"(?<![\w.=])/(?:[\w.-]+/)+[\w.-]+", text):
        assert path.startswith(str(upload_folder() / "study-media")), path


@pytest.fixture(scope="module")
def study(studio) -> str:
    """A two-system study of tiny synthetic clips (32×32) in the running app's database."""
    service = studio["services"].study
    service.create_study(StudySpec(
        STUDY, [PromptSpec("a red cube on a checker floor", "static"),
                PromptSpec("a blue sphere, the camera pans left", "camera"),
                PromptSpec("a green cone on a tiled floor", "static")],
        seeds=[0], systems=["baseline", "tuned"], max_votes_per_evaluator=10, attention_rate=0.0))
    progress = pregenerate(service.engine, service.data_dir, STUDY, generate_synthetic)
    assert progress.ready == progress.total == 6
    return STUDY


def test_no_file_of_the_data_dir_is_served(studio, study):
    base, data = studio["url"], studio["data"].resolve()
    status, dealt = post(base, "ab_next", [study, "api:exposure"])
    assert status == 200
    battle = dealt["data"][0]
    assert post(base, "ab_vote", [battle["battle_id"], "api:exposure", "left", "", ""])[0] == 200
    studio["services"].study.export(study)  # data/exports/
    run = data / "runs" / "exposure-probe"
    run.mkdir(parents=True, exist_ok=True)
    (run / "job.json").write_text("{}")
    files = [p for p in data.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"studio.db", "studio.db-wal", "job.json"} <= names  # and study_media.key, the served names' secret
    assert any(p.suffix == ".csv" for p in files) and any(p.suffix == ".mp4" for p in files)
    for path in [*files, data, data / "runs"]:
        status, body = get(base, f"gradio_api/file={path}")
        assert status in (403, 404), (path, status)
        assert not body.startswith(b"SQLite format 3")
    # The same through a detour inside the served folder.
    detour = upload_folder() / "study-media" / os.path.relpath(data / "studio.db", upload_folder() / "study-media")
    assert get(base, f"gradio_api/file={detour}")[0] in (403, 404)


def test_committed_votes_stay_visible_after_someone_asks_for_the_database_over_http(studio, study):
    """Serving studio.db lost votes: the server's close() of the file dropped the app's SQLite
    locks, the next process to open and close the database deleted the live WAL, and later
    commits went to the deleted file (invisible to every other process, gone after a crash)."""
    import subprocess
    import sys

    base, db = studio["url"], studio["data"].resolve() / "studio.db"
    count = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "print(c.execute('SELECT count(*) FROM votes').fetchone()[0]); c.close()")

    def votes_seen_by_another_process() -> int:
        proc = subprocess.run([sys.executable, "-c", count, str(db)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout)

    def vote_once(evaluator: str) -> None:
        battle = post(base, "ab_next", [study, evaluator])[1]["data"][0]
        assert post(base, "ab_vote", [battle["battle_id"], evaluator, "both_bad", "", ""])[0] == 200

    vote_once("api:wal-1")
    for name in ("studio.db", "studio.db-wal", "studio.db-shm"):
        get(base, f"gradio_api/file={db.parent / name}")
    before = votes_seen_by_another_process()  # opens and closes the database
    vote_once("api:wal-2")
    vote_once("api:wal-3")
    assert votes_seen_by_another_process() == before + 2
    assert (db.parent / "studio.db-wal").exists()


def test_api_responses_carry_no_server_path_and_clips_have_opaque_names(studio, study):
    from gradio_client import Client

    base, data = studio["url"], studio["data"].resolve()
    status, dealt = post(base, "ab_next", [study, "api:paths"])
    assert status == 200
    text = json.dumps(dealt)
    assert_no_server_path(text, data)
    battle = dealt["data"][0]
    clips = {p.read_bytes() for p in data.glob("studies/*/clips/*.mp4")}
    served = []
    for side in ("left", "right"):
        match = SERVED_NAME.fullmatch(battle[f"{side}_video"])
        assert match, battle[f"{side}_video"]
        status, body = get(base, battle[f"{side}_video"])
        assert status == 200 and body in clips
        served.append(Path(match.group(1)).name)
    assert served[0] != served[1]
    assert not set(served) & {p.name for p in data.rglob("*.mp4")}  # not the stored clips' names

    client = Client(base + "/", verbose=False, download_files=False)
    again = client.predict(study, "api:paths", api_name="/ab_next")
    assert again["battle_id"] == battle["battle_id"] and again["left_video"] == battle["left_video"]
    receipt = client.predict(battle["battle_id"], "api:paths", "right", api_name="/ab_vote")
    results = client.predict(study, False, "", api_name="/ab_results")
    for response in (again, receipt, results):
        assert_no_server_path(json.dumps(response), data)
    for page in ("config", "gradio_api/info"):
        status, body = get(base, page)
        assert status == 200 and str(data).encode() not in body


@pytest.mark.parametrize(("endpoint", "args", "status", "message"), [
    ("ab_vote", ["1.5", "api:bad", "left", "", ""], 400, "battle_id: expected the whole number"),
    ("ab_vote", ["abc", "api:bad", "left", "", ""], 400, "battle_id: expected the whole number"),
    ("ab_vote", [1.5, "api:bad", "left", "", ""], 400, "battle_id"),
    ("ab_vote", [99999999, "api:bad", "left", "", ""], 404, "battle_id: no battle 99999999"),
    ("ab_next", [STUDY, "x" * 10_000], 400, "evaluator: the id has 10000 characters"),
    ("ab_next", [STUDY, "api:a\x00b"], 400, "evaluator: character U\\+0000"),
    ("ab_next", [STUDY, "api:\u202eevil"], 400, "evaluator: character U\\+202E"),
    ("ab_next", [STUDY, "api:tab\tbed"], 400, "evaluator: character U\\+0009"),
    ("ab_next", [STUDY, ""], 400, "no evaluator id"),
    ("ab_next", ["no-such-study", "api:bad"], 404, "study: no study named 'no-such-study'"),
    ("ab_next", [STUDY, "hf:someone"], 403, "reserved"),
    ("ab_results", [STUDY, "maybe", ""], 400, "exclude_careless: expected true or false"),
])
def test_user_errors_answer_4xx_with_a_message(studio, study, endpoint, args, status, message):
    got, payload = post(studio["url"], endpoint, args)
    assert got == status and re.search(message, payload["error"]), payload


def test_votes_answers_and_battle_ownership_are_checked(studio, study):
    base = studio["url"]
    battle = post(base, "ab_next", [study, "api:owner"])[1]["data"][0]
    got, payload = post(base, "ab_vote", [battle["battle_id"], "api:intruder", "left", "", ""])
    assert got == 403 and "another evaluator" in payload["error"]
    got, payload = post(base, "ab_vote", [battle["battle_id"], "api:owner", "maybe", "", ""])
    assert got == 400 and payload["error"].startswith("overall: the answer must be one of left, right")
    got, _ = post(base, "ab_vote", [str(battle["battle_id"]), "api:owner", "left", "", ""])  # "7" is fine
    assert got == 200


def test_results_need_admin_rights_when_the_studio_is_exposed(studio, study, monkeypatch):
    base = studio["url"]
    monkeypatch.setenv("STUDIO_EXPOSED", "1")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "s3cret")
    got, payload = post(base, "ab_results", [study, False, ""])
    assert got == 403 and "admin only" in payload["error"]
    assert post(base, "ab_results", [study, False, "wrong"])[0] == 403
    got, payload = post(base, "ab_results", [study, False, "s3cret"])
    assert got == 200 and payload["data"][0]["study"]["name"] == study


@pytest.mark.e2e
def test_ab_clips_are_served_opaque_and_crisp_and_voting_opens_once_both_played(page, studio, study):
    page.get_by_role("tab", name="A/B study").click()
    page.get_by_role("button", name="↻ studies").click()
    page.wait_for_timeout(500)
    page.get_by_label("Study").first.click()
    page.get_by_role("option", name=study).click()
    page.get_by_role("button", name="Next pair").click()
    for sel in ("#ab-left video[src]", "#ab-right video[src]"):
        page.wait_for_selector(sel)
    sources = page.eval_on_selector_all(".ab-clip video", "vs => vs.map(v => v.getAttribute('src'))")
    assert len(sources) == 2
    for src in sources:
        assert "/study-media/" in src and str(studio["data"]) not in src
    vote = page.get_by_role("button", name="Submit vote")
    assert not vote.is_enabled()
    for sel in ("#ab-left video", "#ab-right video"):  # play both once, as a person would
        page.eval_on_selector(sel, "v => { v.muted = true; v.currentTime = 0; return v.play(); }")
    page.wait_for_function("() => [...document.querySelectorAll('.ab-clip video')].every(v => v.ended || v.currentTime > 0)")
    for _ in range(120):
        if vote.is_enabled():
            break
        page.wait_for_timeout(250)
    assert vote.is_enabled(), "the vote did not open after both clips played"
    page.wait_for_timeout(1000)  # both clips restart and end again: the vote must stay open
    assert vote.is_enabled()
    shown = page.eval_on_selector_all(".ab-clip video", """vs => vs.map(v => ({
        rendering: getComputedStyle(v).imageRendering, natural: v.videoWidth,
        width: v.getBoundingClientRect().width, height: v.getBoundingClientRect().height}))""")
    for clip in shown:
        assert clip["rendering"] == "pixelated"
        scale = clip["width"] / clip["natural"]
        # the 32-px clip is 16x its size on the page: 8x in the file (studio.video), 2x by the browser
        assert clip["width"] == 16 * 32 and scale == int(scale) and clip["height"] == clip["width"], clip
    page.locator("label:has-text('Left better')").nth(2).click()  # overall
    vote.click()
    page.wait_for_selector("text=Left was")
    page.wait_for_selector("text=1/10 votes")


def test_an_internal_error_is_a_500_without_its_details(studio, study, monkeypatch):
    service = studio["services"].study
    data = studio["data"].resolve()

    def broken(*args, **kwargs):
        raise RuntimeError(f"disk I/O error at {data / 'studio.db'}")

    monkeypatch.setattr(service, "next_battle", broken)
    got, payload = post(studio["url"], "ab_next", [study, "api:unlucky"])
    assert got == 500 and payload.get("error") is None
    assert_no_server_path(json.dumps(payload), data)
