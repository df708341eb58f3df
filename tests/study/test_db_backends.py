"""What PostgreSQL enforces that SQLite does not, and results that must not depend on the backend."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from studio.study.battles import (
    PromptSpec,
    StudySpec,
    create_study,
    load_votes,
    next_battle,
    pregenerate,
    submit_vote,
)
from studio.study.db import Clip, Evaluator, Study, Vote, make_engine, migrate

BOTH = pytest.mark.db_backends("sqlite", "postgresql")


@BOTH
def test_values_at_a_column_limit_are_stored_and_one_more_character_is_refused_up_front(engine, data_dir,
                                                                                        synthetic_clips):
    """String(n) columns: PostgreSQL refuses a longer value, SQLite would store it. Both refuse it
    before writing anything, with a message naming the field."""
    name_limit = Study.__table__.c.name.type.length
    evaluator_limit = Evaluator.__table__.c.id.type.length
    version_limit = Vote.__table__.c.app_version.type.length
    name, systems = "s" * name_limit, ["a" * name_limit, "b" * name_limit]
    create_study(engine, StudySpec(name, [PromptSpec("p", "static")], [0], systems, attention_rate=0.0))
    pregenerate(engine, data_dir, name, synthetic_clips)
    evaluator = "api:" + "e" * (evaluator_limit - 4)
    view = next_battle(engine, data_dir, name, evaluator)
    receipt = submit_vote(engine, view.battle_id, evaluator, {"overall": "left"}, "v" * version_limit)
    assert {receipt.left_system, receipt.right_system} == set(systems)
    assert load_votes(engine, name)[0]["app_version"] == "v" * version_limit

    with pytest.raises(ValueError, match=f"study name: at most {name_limit} characters"):
        create_study(engine, StudySpec(name + "s", [PromptSpec("p", "static")], [0], ["a", "b"]))
    with pytest.raises(ValueError, match=f"system name: at most {name_limit} characters"):
        create_study(engine, StudySpec("t", [PromptSpec("p", "static")], [0], ["a", "b" * (name_limit + 1)]))
    with pytest.raises(ValueError, match=f"evaluator id: at most {evaluator_limit} characters"):
        next_battle(engine, data_dir, name, evaluator + "e")
    with pytest.raises(ValueError, match=f"source: at most {Evaluator.__table__.c.source.type.length}"):
        next_battle(engine, data_dir, name, "api:other", source="x" * 21)
    other = next_battle(engine, data_dir, name, "api:other")
    with pytest.raises(ValueError, match=f"app_version: at most {version_limit} characters"):
        submit_vote(engine, other.battle_id, "api:other", {"overall": "left"}, "v" * (version_limit + 1))
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Study)) == 1
        assert s.scalar(select(func.count()).select_from(Vote)) == 1


@BOTH
def test_nul_characters_are_refused_up_front_or_dropped_from_error_messages(engine, data_dir):
    """PostgreSQL text cannot hold NUL (SQLite stores it)."""
    with pytest.raises(ValueError, match="prompt: the NUL character"):
        create_study(engine, StudySpec("n", [PromptSpec("a\x00b", "static")], [0], ["a", "b"]))
    create_study(engine, StudySpec("n", [PromptSpec("p", "static")], [0], ["a", "b"], attention_rate=0.0))

    def failing(system, prompt, seed, out_path):
        raise RuntimeError("decoder said \x00")

    progress = pregenerate(engine, data_dir, "n", failing)
    assert progress.failed == 2
    with Session(engine) as s:
        assert s.scalars(select(Clip.error)).all() == ["RuntimeError: decoder said "] * 2
    with pytest.raises(ValueError, match="evaluator id: the NUL character"):
        next_battle(engine, data_dir, "n", "api:a\x00")


def _deals(engine, data_dir: Path, seed: int, generate) -> list[tuple[str, int, str, str]]:
    """Three evaluators vote to the cap with one seeded rng; what each battle showed."""
    create_study(engine, StudySpec("det", [PromptSpec(f"prompt {i}", "static") for i in range(3)], [0, 1],
                                   ["a", "b", "c"], max_votes_per_evaluator=4, attention_rate=0.3))
    failed_once: set[tuple[str, str, int]] = set()

    def fails_once_on_prompt_0(system, prompt, clip_seed, out_path):
        if prompt == "prompt 0" and (system, prompt, clip_seed) not in failed_once:
            failed_once.add((system, prompt, clip_seed))
            raise RuntimeError("out of memory")
        generate(system, prompt, clip_seed, out_path)

    pregenerate(engine, data_dir, "det", fails_once_on_prompt_0)
    pregenerate(engine, data_dir, "det", fails_once_on_prompt_0)  # the retry updates prompt 0's rows last
    rng, shown = random.Random(seed), []
    for e in range(3):
        while (view := next_battle(engine, data_dir, "det", f"api:{e}", rng=rng)) is not None:
            receipt = submit_vote(engine, view.battle_id, f"api:{e}", {"overall": "left"}, "test")
            shown.append((view.prompt, view.seed, receipt.left_system, receipt.right_system))
    return shown


def test_a_seeded_rng_deals_the_same_battles_on_sqlite_and_postgresql(tmp_path, postgres_server, synthetic_clips):
    """The rows the deal draws from are read in id order, not in whatever order a query plan
    yields them. Here PostgreSQL is made to scan tables in storage order, where an updated row
    (a pre-generation retry) has moved to the end; a larger table gets such a plan by itself."""
    sqlite = make_engine(data_dir=tmp_path / "sqlite")
    postgres = make_engine(postgres_server.create_database("deals"), migrate_schema=False)

    @event.listens_for(postgres, "connect")
    def _scan_in_storage_order(dbapi_connection, _record) -> None:  # noqa: ANN001
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        dbapi_connection.commit()

    migrate(postgres)
    try:
        assert (_deals(sqlite, tmp_path / "sqlite", 7, synthetic_clips)
                == _deals(postgres, tmp_path / "postgres", 7, synthetic_clips))
    finally:
        sqlite.dispose()
        postgres.dispose()
        postgres_server.drop_database("deals")


def test_the_readme_url_form_reaches_postgresql_through_psycopg(postgres_server, monkeypatch):
    """`STUDIO_DB_URL=postgresql://...` (no driver named) is what the README gives."""
    url = postgres_server.create_database("readme").replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv("STUDIO_DB_URL", url)
    engine = make_engine()
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Study)) == 0
    finally:
        engine.dispose()
        postgres_server.drop_database("readme")
