"""Database of the A/B study: SQLAlchemy 2 models, engine, versioned migrations.

SQLite (WAL) under the data dir by default; any SQLAlchemy URL through `STUDIO_DB_URL`
(e.g. PostgreSQL on a Space with persistent storage).

Why the SQLite settings below:
- WAL lets readers (the results page) run while votes are written.
- `synchronous=FULL` for votes, so a committed vote survives an app kill *and* a power cut
  (one fsync, ~7 ms on this machine's disk); other transactions (dealing a battle) use
  NORMAL, which in WAL mode survives an app kill and at worst, after a power cut, re-deals
  a battle. Pass `execution_options(sqlite_synchronous="FULL")` to a session for the former.
- Every transaction starts with `BEGIN IMMEDIATE`: a read-then-write transaction
  (look up the battle, insert the vote) otherwise takes the write lock only on its first
  write, and two of them can deadlock, which SQLite reports as "database is locked"
  without waiting for the busy timeout.

Idempotency: `votes` has a unique constraint on (battle_id, evaluator_id), so a retried
submit finds the first row instead of writing a second one.

Timestamps are naive UTC (`utc_now()`), the same on SQLite and PostgreSQL.

What PostgreSQL (READ COMMITTED, shared by several app processes) needs beyond SQLite:
- Transactions interleave instead of running one at a time, so whatever must be serialised
  takes a lock: `next_battle` locks the evaluator's row (SELECT ... FOR UPDATE; without it two
  tabs of one evaluator can both see cap-1 votes and both deal a battle), `migrate` an
  advisory lock (two replicas starting on a fresh database both create the tables otherwise).
- `String(n)` is enforced (SQLite stores any length) and text cannot hold NUL characters:
  values from callers are checked up front with `check_text`, on both backends alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, QueryableAttribute, mapped_column
from sqlalchemy.pool import StaticPool

CRITERIA: tuple[str, ...] = ("3d_consistency", "camera", "overall")
REQUIRED_CRITERIA: tuple[str, ...] = ("overall",)
ANSWERS: tuple[str, ...] = ("left", "right", "both_good", "both_bad")
CATEGORIES: tuple[str, ...] = ("static", "camera", "dynamic")
BATTLE_KINDS: tuple[str, ...] = ("pair", "attention_identical", "attention_shuffled")

DB_FILENAME = "studio.db"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def answer_column(criterion: str) -> str:
    """Column name of a criterion's answer (`3d_consistency` is not a Python identifier)."""
    return f"answer_{criterion}"


def check_text(value: str, column: QueryableAttribute, what: str) -> str:
    """`value` if it can be stored in `column` on every backend: within a String(n) column's
    length (PostgreSQL refuses longer, SQLite stores it) and without NUL (PostgreSQL refuses it).
    ValueError naming `what` otherwise."""
    limit = getattr(column.type, "length", None)
    if limit is not None and len(value) > limit:
        raise ValueError(f"{what}: at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise ValueError(f"{what}: the NUL character is not allowed")
    return value


def _answer_check(column: str) -> CheckConstraint:
    allowed = ", ".join(f"'{a}'" for a in ANSWERS)
    return CheckConstraint(f"{column} IS NULL OR {column} IN ({allowed})", name=f"ck_{column}")


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    systems_json: Mapped[str] = mapped_column(Text)  # ordered list of system names
    seeds_json: Mapped[str] = mapped_column(Text)
    max_votes_per_evaluator: Mapped[int] = mapped_column(Integer)
    attention_rate: Mapped[float] = mapped_column(Float)
    attention_fail_limit: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|generating|ready|failed
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("study_id", "position", name="uq_prompt_position"),
        CheckConstraint("category IN ('static', 'camera', 'dynamic')", name="ck_prompt_category"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(20))


class Clip(Base):
    """One cached clip: study × prompt × seed × system. Paths are relative to the data dir."""

    __tablename__ = "clips"
    __table_args__ = (UniqueConstraint("study_id", "prompt_id", "seed", "system", name="uq_clip"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    seed: Mapped[int] = mapped_column(Integer)
    system: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|ready|failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    shuffled_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # attention check: frames shuffled
    # Added by migration 3: a byte copy under another name, so an identical-clips check does
    # not show the same URL twice.
    twin_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # automatic metrics
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now, onupdate=utc_now)


class Evaluator(Base):
    __tablename__ = "evaluators"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "hf:<user>" or "anon:<uuid>"
    source: Mapped[str] = mapped_column(String(20))  # hf|browser|api
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class Battle(Base):
    """One blind pair shown to one evaluator; `seq` numbers an evaluator's battles in a study.

    Two concurrent `next_battle` calls of the same evaluator create one battle, not two: they
    run one at a time (the evaluator's row lock), and the unique (study, evaluator, seq) backs that.
    """

    __tablename__ = "battles"
    __table_args__ = (
        UniqueConstraint("study_id", "evaluator_id", "seq", name="uq_battle_seq"),
        CheckConstraint(
            "kind IN ('pair', 'attention_identical', 'attention_shuffled')", name="ck_battle_kind"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    evaluator_id: Mapped[str] = mapped_column(ForeignKey("evaluators.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    seed: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(30))
    left_system: Mapped[str] = mapped_column(String(200))
    right_system: Mapped[str] = mapped_column(String(200))
    left_path: Mapped[str] = mapped_column(Text)
    right_path: Mapped[str] = mapped_column(Text)
    shuffled_side: Mapped[str | None] = mapped_column(String(5), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    served_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


class Vote(Base):
    """One evaluator's answers to one battle. Denormalised so an export needs no joins."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("battle_id", "evaluator_id", name="uq_vote_battle_evaluator"),
        *(_answer_check(answer_column(c)) for c in CRITERIA),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    battle_id: Mapped[int] = mapped_column(ForeignKey("battles.id"))
    evaluator_id: Mapped[str] = mapped_column(ForeignKey("evaluators.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(Integer)
    category: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(30))
    left_system: Mapped[str] = mapped_column(String(200))
    right_system: Mapped[str] = mapped_column(String(200))
    shuffled_side: Mapped[str | None] = mapped_column(String(5), nullable=True)
    answer_3d_consistency: Mapped[str | None] = mapped_column(String(10), nullable=True)
    answer_camera: Mapped[str | None] = mapped_column(String(10), nullable=True)
    answer_overall: Mapped[str] = mapped_column(String(10))
    attention_failed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    time_to_vote_ms: Mapped[int] = mapped_column(Integer)
    app_version: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)
    # Added by migration 2: free-form client context (user agent, screen size) so that
    # later questions about a vote need no further migration.
    extra_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime] = mapped_column(DateTime, default=utc_now)


# --- migrations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def add_column_if_missing(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """ALTER TABLE ... ADD COLUMN, skipped when present, so a half-applied run can be re-run."""
    existing = {c["name"] for c in inspect(conn).get_columns(table)}
    if column not in existing:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}"))


def _initial_schema(conn: Connection) -> None:
    # Version 1 is what existed before versioning; its tables are created by create_all.
    Base.metadata.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial_schema),
    Migration(
        2,
        "votes.extra_json: free-form client context",
        lambda conn: add_column_if_missing(conn, "votes", "extra_json", "TEXT"),
    ),
    Migration(
        3,
        "clips.twin_path: a copy for identical-clip attention checks",
        lambda conn: add_column_if_missing(conn, "clips", "twin_path", "TEXT"),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version
MIGRATION_LOCK_KEY = 0x5354_5544_494F  # any constant: PostgreSQL advisory locks are per database


def schema_version(conn: Connection) -> int:
    tables = set(inspect(conn).get_table_names())
    if "schema_version" not in tables:
        return 1 if "studies" in tables else 0
    return conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version.desc())).scalar() or 0


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema in one transaction; returns the version now in place.

    A fresh database gets the current models and is stamped with the latest version; an
    older one runs each later migration in order. Tables that are new in the models are
    created at the end (create_all skips existing ones), so adding a table needs no step.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held to the end of this transaction: a second process starting at the same time
            # waits here, then finds the schema in place. (SQLite's BEGIN IMMEDIATE does the same.)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        current = schema_version(conn)
        if current == 0:
            Base.metadata.create_all(conn)
            for m in MIGRATIONS:
                conn.execute(SchemaVersion.__table__.insert().values(
                    version=m.version, description=m.description, applied_at=utc_now()))
            return LATEST_VERSION
        if current > LATEST_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this app ({LATEST_VERSION}); "
                "upgrade the app instead of running an old one against it"
            )
        SchemaVersion.__table__.create(conn, checkfirst=True)
        if conn.execute(select(SchemaVersion.version)).first() is None:
            conn.execute(SchemaVersion.__table__.insert().values(
                version=1, description="initial schema (stamped)", applied_at=utc_now()))
        for m in MIGRATIONS:
            if m.version > current:
                m.apply(conn)
                conn.execute(SchemaVersion.__table__.insert().values(
                    version=m.version, description=m.description, applied_at=utc_now()))
        Base.metadata.create_all(conn)
        return LATEST_VERSION


# --- engine -------------------------------------------------------------------------


def data_dir_from_env(data_dir: str | Path | None = None) -> Path:
    return Path(data_dir if data_dir is not None else os.environ.get("STUDIO_DATA_DIR", "./data"))


def database_url(data_dir: str | Path | None = None) -> str:
    """`STUDIO_DB_URL` when set, else a SQLite file in the data dir."""
    url = os.environ.get("STUDIO_DB_URL")
    if url:
        return url
    directory = data_dir_from_env(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / DB_FILENAME).resolve()}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        # Hand transaction control to SQLAlchemy's "begin" event below (the pysqlite
        # driver would otherwise issue its own deferred BEGIN).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        synchronous = conn.get_execution_options().get("sqlite_synchronous", "NORMAL")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, got {synchronous!r}")
        conn.exec_driver_sql(f"PRAGMA synchronous={synchronous}")
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | None = None, data_dir: str | Path | None = None, migrate_schema: bool = True) -> Engine:
    """Engine for `url` (default: `database_url(data_dir)`), schema migrated on creation."""
    url = url or database_url(data_dir)
    kwargs: dict = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if is_sqlite:
        _configure_sqlite(engine)
    if migrate_schema:
        migrate(engine)
    return engine


DURABLE = {"sqlite_synchronous": "FULL"}
"""Execution options for a transaction that must survive a power cut (ignored off SQLite)."""
