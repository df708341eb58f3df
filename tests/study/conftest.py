"""Fixtures: a real study database in a temp dir and tiny real MP4 clips.

The database is SQLite by default. A module or test marked `db_backends("sqlite", "postgresql")`
runs once per backend; the PostgreSQL variant gets an empty database on a throwaway server
(`scripts/throwaway_postgres.py`) started once per session, and is skipped, with the reason,
only where the server binaries are not installed.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from scripts.throwaway_postgres import ThrowawayPostgres, server_bindir
from studio.study.battles import PromptSpec, StudySpec, create_study, pregenerate
from studio.study.db import database_url, make_engine
from studio.study.media import generate_synthetic

PROMPTS = [
    PromptSpec("a red cube on a checker floor", "static"),
    PromptSpec("a blue sphere, the camera pans left", "camera"),
    PromptSpec("a green cone rolls to the right", "dynamic"),
]
_database_numbers = itertools.count()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "db_backends(*names): run on each named study database (sqlite, postgresql); default sqlite")


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker("db_backends")
    if marker is not None and tuple(marker.args) != ("sqlite",) and "db_backend" in metafunc.fixturenames:
        metafunc.parametrize("db_backend", marker.args, indirect=True)


def small_spec(name: str = "s1", systems=("baseline", "tuned"), **kw) -> StudySpec:
    return StudySpec(name=name, prompts=PROMPTS, seeds=[0, 1], systems=list(systems), **kw)


@pytest.fixture
def spec():
    """Factory for the small study spec (3 prompts × 2 seeds), keyword overrides allowed."""
    return small_spec


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def _no_db_url_from_env(monkeypatch):
    """Tests use their own databases, never one named in the environment."""
    monkeypatch.delenv("STUDIO_DB_URL", raising=False)


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the session (about 1.5 s to start, on loopback)."""
    if server_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
                    "`bash scripts/setup.sh --test` installs Debian's postgresql package")
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def db_backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def db_url(request, db_backend: str, data_dir: Path, monkeypatch, _no_db_url_from_env) -> str:
    """This test's empty database. On PostgreSQL it is also put in STUDIO_DB_URL, so what
    builds its own engine (StudyService, make_engine(data_dir=...), a subprocess) uses it too."""
    if db_backend == "sqlite":
        yield database_url(data_dir)
        return
    if db_backend != "postgresql":
        raise ValueError(f"unknown db_backend {db_backend!r}")
    server: ThrowawayPostgres = request.getfixturevalue("postgres_server")
    name = f"test_{next(_database_numbers)}"
    url = server.create_database(name)
    monkeypatch.setenv("STUDIO_DB_URL", url)
    yield url
    server.drop_database(name)


@pytest.fixture
def engine(db_url: str):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def synthetic_clips():
    """`generate_synthetic` with its clips kept for the session: the fixture study's 12 clips
    are encoded once, and each test still gets its own files."""
    encoded: dict[tuple[str, str, int], bytes] = {}

    def generate(system: str, prompt: str, seed: int, out_path: Path) -> None:
        key = (system, prompt, seed)
        if key not in encoded:
            generate_synthetic(system, prompt, seed, out_path)
            encoded[key] = out_path.read_bytes()
        out_path.write_bytes(encoded[key])

    return generate


@pytest.fixture
def ready_study(engine, data_dir, synthetic_clips) -> str:
    """A pregenerated 3 prompts × 2 seeds × 2 systems study without attention checks."""
    create_study(engine, small_spec(attention_rate=0.0, max_votes_per_evaluator=100))
    progress = pregenerate(engine, data_dir, "s1", synthetic_clips)
    assert progress.ready == progress.total == 12
    return "s1"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
