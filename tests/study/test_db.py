"""Schema, migrations, durability and concurrency of the vote database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studio.study.battles import PromptSpec, StudySpec, create_study, load_votes, next_battle, pregenerate, submit_vote
from studio.study.db import LATEST_VERSION, SchemaVersion, Vote, database_url, make_engine, migrate, schema_version
from studio.study.media import generate_synthetic

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.db_backends("sqlite", "postgresql")


def _vote_once(engine, data_dir, study, evaluator, answer="left"):
    view = next_battle(engine, data_dir, study, evaluator)
    return submit_vote(engine, view.battle_id, evaluator, {"overall": answer}, "test")


def test_fresh_database_is_current(engine):
    with engine.connect() as conn:
        assert schema_version(conn) == LATEST_VERSION
        columns = {c["name"] for c in inspect(conn).get_columns("votes")}
    assert {"answer_3d_consistency", "answer_camera", "answer_overall", "time_to_vote_ms",
            "app_version", "created_at", "extra_json"} <= columns
    assert migrate(engine) == LATEST_VERSION  # a second start changes nothing
    with Session(engine) as s:
        assert s.scalars(select(SchemaVersion.version)).all() == list(range(1, LATEST_VERSION + 1))


@pytest.mark.db_backends("sqlite")
def test_sqlite_database_is_in_wal_mode(engine):
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_db_url_from_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("STUDIO_DB_URL", url)
    assert database_url(tmp_path / "ignored") == url
    make_engine().dispose()
    assert (tmp_path / "elsewhere.db").exists()


@pytest.mark.parametrize("stamped", [True, False], ids=["version-table-at-1", "no-version-table"])
def test_migration_from_version_1_keeps_votes(engine, data_dir, ready_study, stamped):
    receipt = _vote_once(engine, data_dir, ready_study, "anon:old")
    # Turn the database into a version-1 one: columns of later versions dropped, version 1
    # (or no version table at all, as before versioning).
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE votes DROP COLUMN extra_json"))
        conn.execute(text("ALTER TABLE clips DROP COLUMN twin_path"))
        conn.execute(text("DELETE FROM schema_version WHERE version > 1"))
        if not stamped:
            conn.execute(text("DROP TABLE schema_version"))
    engine.dispose()

    upgraded = make_engine(data_dir=data_dir)
    with upgraded.connect() as conn:
        assert schema_version(conn) == LATEST_VERSION
        assert "extra_json" in {c["name"] for c in inspect(conn).get_columns("votes")}
        assert "twin_path" in {c["name"] for c in inspect(conn).get_columns("clips")}
    votes = load_votes(upgraded, ready_study)
    assert [v["vote_id"] for v in votes] == [receipt.vote_id]
    view = next_battle(upgraded, data_dir, ready_study, "anon:new")
    submit_vote(upgraded, view.battle_id, "anon:new", {"overall": "both_bad"}, "test", extra={"ua": "x"})
    with Session(upgraded) as s:
        assert s.scalar(select(Vote.extra_json).where(Vote.evaluator_id == "anon:new")) == '{"ua": "x"}'
    upgraded.dispose()


def test_newer_schema_is_refused(engine):
    with engine.begin() as conn:
        conn.execute(SchemaVersion.__table__.insert().values(version=LATEST_VERSION + 1, description="future"))
    with pytest.raises(RuntimeError, match="newer"):
        migrate(engine)


def test_unique_vote_per_battle_and_evaluator_is_enforced_by_the_database(engine, data_dir, ready_study):
    receipt = _vote_once(engine, data_dir, ready_study, "anon:a")
    with Session(engine) as s:
        row = s.get(Vote, receipt.vote_id)
        copy = {c.name: getattr(row, c.name) for c in Vote.__table__.columns if c.name != "id"}
    with pytest.raises(IntegrityError), Session(engine) as s, s.begin():
        s.add(Vote(**copy))


def test_votes_survive_a_killed_process(engine, data_dir, ready_study):
    """A process that commits votes and is then SIGKILLed (no clean shutdown) loses none."""
    engine.dispose()
    script = textwrap.dedent(f"""
        import os, signal
        from studio.study.battles import next_battle, submit_vote
        from studio.study.db import make_engine
        engine = make_engine(data_dir={str(data_dir)!r})
        for i in range(3):
            view = next_battle(engine, {str(data_dir)!r}, "s1", "anon:killed")
            submit_vote(engine, view.battle_id, "anon:killed", {{"overall": "left"}}, "test")
        print("committed", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "committed" in proc.stdout
    restarted = make_engine(data_dir=data_dir)
    assert len([v for v in load_votes(restarted, "s1") if v["evaluator"] == "anon:killed"]) == 3
    restarted.dispose()


def test_concurrent_threads_lose_and_duplicate_no_vote(engine, data_dir):
    """8 threads, 16 evaluators; each vote is also re-submitted (a client retry) from a
    second thread at the same time. Every acknowledged vote is stored exactly once."""
    prompts = [PromptSpec(f"prompt {i}", "static") for i in range(6)]
    create_study(engine, StudySpec("conc", prompts, [0], ["a", "b", "c"], max_votes_per_evaluator=6,
                                   attention_rate=0.0))
    pregenerate(engine, data_dir, "conc", generate_synthetic)
    evaluators = [f"anon:e{i}" for i in range(16)]
    acknowledged: list[tuple[int, str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(battle_id: int, evaluator: str) -> None:
        receipt = submit_vote(engine, battle_id, evaluator, {"overall": "right", "camera": "left"}, "test")
        with lock:
            acknowledged.append((receipt.battle_id, evaluator, receipt.recorded))

    def worker(mine: list[str]) -> None:
        try:
            for evaluator in mine:
                for _ in range(20):  # bounded: the cap (6) ends the loop first
                    view = next_battle(engine, data_dir, "conc", evaluator)
                    if view is None:
                        break
                    retry = threading.Thread(target=submit, args=(view.battle_id, evaluator))
                    retry.start()
                    submit(view.battle_id, evaluator)
                    retry.join()
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(evaluators[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    stored = load_votes(engine, "conc")
    keys = [(v["battle_id"], v["evaluator"]) for v in stored]
    assert len(keys) == len(set(keys)) == 16 * 6
    assert set(keys) == {(b, e) for b, e, _ in acknowledged}
    assert sum(recorded for _, _, recorded in acknowledged) == len(stored)  # the retries were not counted


BACKUP_COMMANDS = {
    # The README's commands (study section), run as the README gives them.
    "python": lambda src, dst: [sys.executable, "-c", "import sqlite3; s, d = sqlite3.connect(%r), "
                                "sqlite3.connect(%r); s.backup(d); d.close(); s.close()" % (str(src), str(dst))],
    "sqlite3-cli": lambda src, dst: ["sqlite3", str(src), f".backup '{dst}'"],
}


@pytest.mark.db_backends("sqlite")
@pytest.mark.parametrize("tool", sorted(BACKUP_COMMANDS))
def test_an_online_backup_taken_while_votes_arrive_loses_nothing(engine, data_dir, ready_study, tool, tmp_path):
    """Votes keep arriving from 4 threads while 3 backups are taken from another process: each
    backup is a sound database holding every vote acknowledged before it started, and the live
    database still holds every acknowledged vote afterwards."""
    import shutil
    import sqlite3
    import time

    if tool == "sqlite3-cli" and shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command-line tool is not installed")
    acknowledged: list[tuple[int, str]] = []
    lock, stop, errors = threading.Lock(), threading.Event(), []

    def voter(worker: int) -> None:
        try:
            for n in range(10_000):  # bounded; `stop` ends it first
                if stop.is_set():
                    return
                evaluator = f"anon:backup-{worker}-{n // 6}"  # 6 pairs each
                view = next_battle(engine, data_dir, ready_study, evaluator)
                receipt = submit_vote(engine, view.battle_id, evaluator, {"overall": "left"}, "test")
                with lock:
                    acknowledged.append((receipt.battle_id, evaluator))
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)

    threads = [threading.Thread(target=voter, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    backups: list[tuple[Path, set]] = []
    try:
        for i in range(3):
            deadline = time.monotonic() + 60
            while len(acknowledged) < 10 * (i + 1) and time.monotonic() < deadline:
                time.sleep(0.02)
            with lock:
                before = set(acknowledged)
            target = tmp_path / f"backup-{i}.db"
            proc = subprocess.run(BACKUP_COMMANDS[tool](data_dir / "studio.db", target), capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            backups.append((target, before))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    for target, before in backups:
        alone = tmp_path / "alone" / target.name  # the backup file by itself, no -wal beside it
        alone.parent.mkdir(exist_ok=True)
        shutil.copyfile(target, alone)
        with sqlite3.connect(alone) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = set(conn.execute("SELECT battle_id, evaluator_id FROM votes").fetchall())
        assert before <= stored and len(before) >= 10
    engine.dispose()
    reopened = make_engine(data_dir=data_dir)
    live = {(v["battle_id"], v["evaluator"]) for v in load_votes(reopened, ready_study)}
    assert live == set(acknowledged) and len(live) == len(acknowledged)
    reopened.dispose()
