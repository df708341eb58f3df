"""Fixtures: a real SQLite database in a temp dir and tiny real MP4 clips."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from studio.study.battles import PromptSpec, StudySpec, create_study, pregenerate
from studio.study.db import make_engine
from studio.study.media import generate_synthetic

PROMPTS = [
    PromptSpec("a red cube on a checker floor", "static"),
    PromptSpec("a blue sphere, the camera pans left", "camera"),
    PromptSpec("a green cone rolls to the right", "dynamic"),
]


def small_spec(name: str = "s1", systems=("baseline", "tuned"), **kw) -> StudySpec:
    return StudySpec(name=name, prompts=PROMPTS, seeds=[0, 1], systems=list(systems), **kw)


@pytest.fixture
def spec():
    """Factory for the small study spec (3 prompts × 2 seeds), keyword overrides allowed."""
    return small_spec


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path):
    engine = make_engine(data_dir=data_dir)
    yield engine
    engine.dispose()


@pytest.fixture
def ready_study(engine, data_dir) -> str:
    """A pregenerated 3 prompts × 2 seeds × 2 systems study without attention checks."""
    create_study(engine, small_spec(attention_rate=0.0, max_votes_per_evaluator=100))
    progress = pregenerate(engine, data_dir, "s1", generate_synthetic)
    assert progress.ready == progress.total == 12
    return "s1"


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture(autouse=True)
def _no_db_url_from_env(monkeypatch):
    """Tests use their own SQLite files, never a database named in the environment."""
    monkeypatch.delenv("STUDIO_DB_URL", raising=False)
