"""What a shared PostgreSQL server changes: concurrent transactions that SQLite serialises.

SQLite runs one write transaction at a time (BEGIN IMMEDIATE); PostgreSQL's READ COMMITTED lets
them interleave, each statement seeing what was committed before it. Every test here runs on
both backends, without StudyService's in-process lock (app replicas sharing one database have
none between them).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from studio.study.battles import PromptSpec, StudySpec, create_study, load_votes, next_battle, pregenerate, submit_vote
from studio.study.db import LATEST_VERSION, Battle, SchemaVersion, Vote, make_engine, migrate

pytestmark = pytest.mark.db_backends("sqlite", "postgresql")


def run_threads(target, n: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def wrapped(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 — returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_one_evaluator_in_many_tabs_never_passes_the_cap_nor_sees_a_pair_twice(engine, data_dir, synthetic_clips):
    """8 threads act as one evaluator's 8 open tabs, each dealing and voting as fast as it can."""
    prompts = [PromptSpec(f"prompt {i}", "static") for i in range(8)]
    create_study(engine, StudySpec("tabs", prompts, [0], ["a", "b"], max_votes_per_evaluator=5, attention_rate=0.0))
    pregenerate(engine, data_dir, "tabs", synthetic_clips)

    def tab(_: int) -> None:
        for _ in range(30):  # bounded; the cap ends it first
            view = next_battle(engine, data_dir, "tabs", "api:tabs")
            if view is None:
                return
            submit_vote(engine, view.battle_id, "api:tabs", {"overall": "left"}, "test")

    assert run_threads(tab, 8) == []
    with Session(engine) as s:
        dealt = s.execute(select(Battle.prompt_id, Battle.seed).where(Battle.evaluator_id == "api:tabs")).all()
    assert len(load_votes(engine, "tabs")) == len(dealt) == 5
    assert max(Counter(dealt).values()) == 1


def test_concurrent_submits_of_one_battle_store_one_vote(engine, data_dir, ready_study):
    """A double click and two retries at once, with different answers: the first stored wins and
    every caller gets that vote back."""
    view = next_battle(engine, data_dir, ready_study, "api:double")
    answers = ["left", "right", "both_good", "both_bad"]
    receipts = []

    def submit(i: int) -> None:
        receipts.append(submit_vote(engine, view.battle_id, "api:double", {"overall": answers[i]}, "test"))

    assert run_threads(submit, 4) == []
    assert sum(r.recorded for r in receipts) == 1
    assert len({r.vote_id for r in receipts}) == 1 and len({r.answers["overall"] for r in receipts}) == 1
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Vote)) == 1


def test_app_replicas_starting_together_migrate_the_schema_once(db_url):
    """Four app processes start at once on a fresh database (here four engines, one thread each)."""
    engines = [make_engine(db_url, migrate_schema=False) for _ in range(4)]
    try:
        assert run_threads(lambda i: migrate(engines[i]), 4) == []
        with Session(engines[0]) as s:
            assert s.scalars(select(SchemaVersion.version)).all() == list(range(1, LATEST_VERSION + 1))
    finally:
        for e in engines:
            e.dispose()


def test_two_admins_creating_one_study_at_once_get_one_study_and_a_clear_error(engine, spec):
    outcomes: list[object] = []

    def create(_: int) -> None:
        try:
            outcomes.append(create_study(engine, spec()))
        except ValueError as exc:
            outcomes.append(str(exc))

    assert run_threads(create, 3) == []
    assert sum(isinstance(o, int) for o in outcomes) == 1
    assert sorted(o for o in outcomes if isinstance(o, str)) == ["a study named 's1' already exists"] * 2
