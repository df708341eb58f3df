"""StudyService: input checks, served clip copies, the viewing log, resumed pre-generation."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from studio.study.battles import create_study, generation_progress, pregenerate, studies_to_resume
from studio.study.media import generate_synthetic
from studio.app.study_service import (
    StudyService,
    ViewingLog,
    check_battle_id,
    check_evaluator_id,
    check_flag,
    resolve_evaluator,
)


def test_pregeneration_resumes_by_itself_when_the_service_starts(engine, data_dir, spec):
    create_study(engine, spec())
    made: list[int] = []

    def stop_after_four() -> bool:
        return len(made) >= 4

    def counting(system, prompt, seed, out_path):
        made.append(seed)
        generate_synthetic(system, prompt, seed, out_path)

    stopped = pregenerate(engine, data_dir, "s1", counting, should_stop=stop_after_four)  # the app went down
    assert stopped.pending == 8 and studies_to_resume(engine) == ["s1"]

    assert StudyService(data_dir=data_dir).jobs == {}  # no generator: nothing to resume with
    service = StudyService(data_dir=data_dir, generate=generate_synthetic)
    assert set(service.jobs) == {"s1"}
    done = service.jobs["s1"].join(timeout=300)
    assert (done.ready, done.pending) == (12, 0) and generation_progress(engine, "s1").pending == 0
    assert studies_to_resume(engine) == [] and service.progress("s1")["fraction"] == 1.0


def test_an_interrupted_attention_copy_run_is_resumed_too(engine, data_dir, spec):
    create_study(engine, spec())
    pregenerate(engine, data_dir, "s1", generate_synthetic)
    from sqlalchemy import text

    with engine.begin() as conn:  # killed while making the attention-check copies
        conn.execute(text("UPDATE studies SET status = 'generating'"))
        conn.execute(text("UPDATE clips SET shuffled_path = NULL, twin_path = NULL"))
    assert studies_to_resume(engine) == ["s1"]
    service = StudyService(data_dir=data_dir, generate=generate_synthetic)
    service.jobs["s1"].join(timeout=300)
    assert studies_to_resume(engine) == [] and service.progress("s1")["ready"] == 12


@pytest.mark.parametrize(("value", "message"), [
    ("x" * 10_000, "evaluator: the id has 10000 characters"),
    ("x" * 129, "the id has 129 characters"),
    ("api:a\x00b", "character U\\+0000 at position 5"),
    ("api:\u202eevil", "character U\\+202E"),
    ("api:zero\u200bwidth", "character U\\+200B"),
    ("api:new\nline", "character U\\+000A"),
    ("api:two words", "character U\\+0020"),
    ("api:<b>", "character '<'"),
    ("api:é", "character 'é'"),
    (12, "evaluator: expected text"),
    (None, "evaluator: expected text"),
    ("   ", "no evaluator id"),
])
def test_evaluator_ids_are_checked_with_a_message_naming_the_field(value, message):
    with pytest.raises(ValueError, match=message) as info:
        check_evaluator_id(value)
    assert len(str(info.value)) < 300


def test_good_evaluator_ids_pass():
    for good in ("anon:0b7f0c2e-4c6a-4d2c-9a53-2d5bb1b7e3a1", "api:alice", "lab-7", "x" * 128, "a.b_c@d+e"):
        assert check_evaluator_id(f" {good} ") == good
    assert resolve_evaluator(None, "api:alice") == ("api:alice", "api")
    with pytest.raises(ValueError, match="evaluator"):
        resolve_evaluator(None, "api:\u202e")
    assert resolve_evaluator("ann", "api:\u202e") == ("hf:ann", "hf")  # a signed-in user's id comes from HF


@pytest.mark.parametrize("bad", [1.5, "1.5", "abc", "", True, 0, -3, "1e3", "\u0663", [1], None, float("nan")])
def test_battle_ids_must_be_whole_numbers(bad):
    with pytest.raises(ValueError, match="battle_id: expected the whole number that /ab_next returned"):
        check_battle_id(bad)


def test_battle_ids_that_are_whole_numbers_pass():
    assert [check_battle_id(v) for v in (3, 3.0, "3", " 42 ")] == [3, 3, 3, 42]


def test_flags_are_true_or_false():
    assert [check_flag(v, "x") for v in (True, False, "true", "False", "0", "1", 0, 1, None, "")] == [
        True, False, True, False, False, True, False, True, False, False]
    with pytest.raises(ValueError, match="exclude_careless: expected true or false"):
        check_flag("maybe", "exclude_careless")


def test_a_vote_with_a_bad_battle_id_is_refused_not_rounded(data_dir, spec):
    service = StudyService(data_dir=data_dir, served_dir=data_dir.parent / "served")
    service.create_study(spec(attention_rate=0.0))
    pregenerate(service.engine, service.data_dir, "s1", generate_synthetic)
    battle = service.next_battle("s1", "api:a")
    assert battle["battle_id"] == 1
    with pytest.raises(ValueError, match="battle_id"):
        service.vote(1.5, "api:a", {"overall": "left"})
    assert service.vote("1", "api:a", {"overall": "left"})["recorded"]


def test_pages_get_opaque_copies_of_the_clips_outside_the_data_dir(data_dir, spec, tmp_path):
    served = tmp_path / "served"
    service = StudyService(data_dir=data_dir, served_dir=served)
    service.create_study(spec(attention_rate=1.0, max_votes_per_evaluator=20))  # attention checks only
    pregenerate(service.engine, service.data_dir, "s1", generate_synthetic)
    stored = {p.name for p in data_dir.rglob("*.mp4")}
    seen_names: set[str] = set()
    identical = 0
    previous: dict | None = None
    for _ in range(16):  # each check is identical or shuffled at random: 16 shuffled in a row is a 1-in-65,536 event
        battle = service.next_battle("s1", "api:a")
        assert str(data_dir) not in str(battle)
        left, right = Path(battle["left_video"]), Path(battle["right_video"])
        assert left.parent == right.parent == served
        for path in (left, right):
            assert re.fullmatch(r"[0-9a-f]{32}\.mp4", path.name) and path.name not in stored
            assert path.name not in seen_names  # one name per battle side, never reused
            seen_names.add(path.name)
        identical += left.read_bytes() == right.read_bytes()  # the "same clip twice" check
        if previous is not None:  # the last battle's copies are gone once the next one is dealt
            assert not Path(previous["left_video"]).exists() and not Path(previous["right_video"]).exists()
        assert sorted(p.name for p in served.iterdir()) == sorted([left.name, right.name])
        service.vote(battle["battle_id"], "api:a", {"overall": "both_good"})
        previous = battle
    assert identical > 0

    restarted = StudyService(data_dir=data_dir, served_dir=served)  # same names after a restart
    assert restarted.media.path(previous["battle_id"], "left") == Path(previous["left_video"])
    other = StudyService(data_dir=tmp_path / "other-data", served_dir=served)  # another data dir: other names
    assert other.media.path(previous["battle_id"], "left") != Path(previous["left_video"])


def test_the_viewing_log_keeps_both_sides_when_they_end_at_the_same_time():
    """Two handlers finishing together: the one that completes the pair sees both sides."""
    for _ in range(200):
        log = ViewingLog()
        log.mark(7, "left", "started")
        log.mark(7, "right", "started")
        barrier = threading.Barrier(2)
        seen: list[frozenset] = []

        def end(side: str) -> None:
            barrier.wait()
            seen.append(log.mark(7, side, "ended"))

        threads = [threading.Thread(target=end, args=(s,)) for s in ("left", "right")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {"left", "right"} in seen and log.played(7) == {"left", "right"}
    assert log.mark(8, "left", "ended") == frozenset()  # an end without a start is not a viewing


def test_an_app_version_the_votes_table_cannot_store_is_refused_when_the_service_starts(tmp_path):
    with pytest.raises(ValueError, match="STUDIO_APP_VERSION: at most 50 characters"):
        StudyService(tmp_path, app_version="v" * 51)
