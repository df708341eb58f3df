"""Studies, clip pre-generation, blind battles and votes.

The flow: `create_study` → `pregenerate` (or `start_pregeneration`, a background thread)
fills the clip cache → evaluators loop `next_battle` / `submit_vote` → `load_votes` feeds
`stats.summarize`.

Blindness: a `BattleView` carries no system names; they come back in the `VoteReceipt`,
i.e. only once the vote is stored. Left/right is drawn per battle.

Attention checks (kind != "pair") show either the same clip twice or a clip beside a copy
of itself with shuffled frames. Failing one means:
- identical clips: preferring a side on "overall";
- shuffled frames: preferring the shuffled side on any criterion, or "both good" on overall.
An evaluator with `attention_fail_limit` failures or more is flagged as careless (stats).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import QueryableAttribute, Session

from studio.study.db import (
    ANSWERS,
    DURABLE,
    CATEGORIES,
    CRITERIA,
    REQUIRED_CRITERIA,
    Battle,
    Clip,
    Evaluator,
    Prompt,
    Study,
    Vote,
    answer_column,
    check_text,
    utc_now,
)
from studio.study.media import write_shuffled_copy

GenerateFn = Callable[[str, str, int, Path], None]
"""generate(system, prompt, seed, out_path) writes one MP4 clip to out_path."""
MetricsFn = Callable[[Path], Mapping[str, float]]
"""metrics(clip_path) -> automatic metrics of one clip (e.g. depth-consistency L1)."""


# --- studies ------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSpec:
    text: str
    category: str  # static | camera | dynamic


@dataclass
class StudySpec:
    name: str
    prompts: Sequence[PromptSpec]
    seeds: Sequence[int]
    systems: Sequence[str]
    max_votes_per_evaluator: int = 40  # the per-evaluator cap, attention checks included
    attention_rate: float = 0.1  # chance that a battle is an attention check
    attention_fail_limit: int = 2  # failed checks that flag an evaluator as careless


def _check_name(value: str, column: QueryableAttribute, what: str) -> None:
    check_text(value, column, what)
    if not value.isprintable():
        raise ValueError(f"{what}: control and invisible characters are not allowed, got {value[:60]!r}")


def check_study_spec(spec: StudySpec) -> None:
    """Validate a study up front, with messages that say what was expected."""
    if not spec.name or not spec.name.strip():
        raise ValueError("a study needs a non-empty name")
    _check_name(spec.name, Study.name, "study name")
    for system in spec.systems:
        _check_name(str(system), Clip.system, "system name")
    if len(spec.systems) < 2:
        raise ValueError(f"a study compares at least 2 systems, got {list(spec.systems)}")
    if len(set(spec.systems)) != len(spec.systems):
        raise ValueError(f"system names must be distinct, got {list(spec.systems)}")
    if not spec.prompts:
        raise ValueError("a study needs at least one prompt")
    texts = [check_text(p.text.strip(), Prompt.text, "prompt") for p in spec.prompts]
    if any(not t for t in texts) or len(set(texts)) != len(texts):
        raise ValueError("prompts must be non-empty and distinct")
    for p in spec.prompts:
        if p.category not in CATEGORIES:
            raise ValueError(f"prompt category must be one of {CATEGORIES}, got {p.category!r} for {p.text!r}")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(spec.seeds)}")
    if spec.max_votes_per_evaluator < 1:
        raise ValueError("max_votes_per_evaluator must be at least 1")
    if not 0.0 <= spec.attention_rate <= 1.0:
        raise ValueError(f"attention_rate must be in [0, 1], got {spec.attention_rate}")
    if spec.attention_fail_limit < 1:
        raise ValueError(f"attention_fail_limit must be at least 1, got {spec.attention_fail_limit}")


def clip_relpath(study_id: int) -> str:
    """A random, opaque file name: the browser sees it in the video URL, so it must not tell
    the system, nor whether a clip is an attention-check copy. The database keeps the map."""
    return f"studies/{study_id}/clips/{secrets.token_hex(8)}.mp4"


def get_study(session: Session, study: int | str) -> Study:
    """A study by id or by name."""
    if isinstance(study, int) or (isinstance(study, str) and study.isdigit()):
        row = session.get(Study, int(study))
        if row is not None:
            return row
    row = session.scalar(select(Study).where(Study.name == str(study)))
    if row is None:
        shown = repr(study) if len(str(study)) <= 60 else f"{str(study)[:59]!r}…"
        raise KeyError(f"study: no study named {shown}")
    return row


def study_systems(row: Study) -> list[str]:
    return list(json.loads(row.systems_json))


def create_study(engine: Engine, spec: StudySpec) -> int:
    """Insert the study, its prompts and one pending clip row per prompt × seed × system."""
    check_study_spec(spec)
    try:
        return _insert_study(engine, spec)
    except IntegrityError:  # created meanwhile by another process (PostgreSQL; SQLite serialises)
        raise ValueError(f"a study named {spec.name!r} already exists") from None


def _insert_study(engine: Engine, spec: StudySpec) -> int:
    with Session(engine) as session, session.begin():
        if session.scalar(select(Study.id).where(Study.name == spec.name)) is not None:
            raise ValueError(f"a study named {spec.name!r} already exists")
        study = Study(
            name=spec.name, systems_json=json.dumps(list(spec.systems)), seeds_json=json.dumps(list(spec.seeds)),
            max_votes_per_evaluator=spec.max_votes_per_evaluator, attention_rate=spec.attention_rate,
            attention_fail_limit=spec.attention_fail_limit, status="pending",
        )
        session.add(study)
        session.flush()
        for position, p in enumerate(spec.prompts):
            prompt = Prompt(study_id=study.id, position=position, text=p.text.strip(), category=p.category)
            session.add(prompt)
            session.flush()
            for seed in spec.seeds:
                for system in spec.systems:
                    session.add(Clip(
                        study_id=study.id, prompt_id=prompt.id, seed=int(seed), system=system,
                        path=clip_relpath(study.id), status="pending",
                    ))
        return study.id


def studies_to_resume(engine: Engine) -> list[str]:
    """Studies whose pre-generation a restart interrupted: a clip still pending, or the run
    stopped while making the attention-check copies (status left at "generating")."""
    with Session(engine) as session:
        pending = select(Clip.study_id).where(Clip.status == "pending")
        return list(session.scalars(
            select(Study.name).where((Study.id.in_(pending)) | (Study.status == "generating")).order_by(Study.id)
        ))


def list_studies(engine: Engine) -> list[dict]:
    with Session(engine) as session:
        rows = session.scalars(select(Study).order_by(Study.id)).all()
        return [
            {"id": r.id, "name": r.name, "status": r.status, "systems": study_systems(r)} for r in rows
        ]


# --- pre-generation -----------------------------------------------------------------


@dataclass(frozen=True)
class GenerationProgress:
    total: int
    ready: int
    failed: int

    @property
    def pending(self) -> int:
        return self.total - self.ready - self.failed

    @property
    def fraction(self) -> float:
        return (self.ready + self.failed) / self.total if self.total else 1.0


def generation_progress(engine: Engine, study: int | str) -> GenerationProgress:
    with Session(engine) as session:
        study_id = get_study(session, study).id
        counts = dict(session.execute(
            select(Clip.status, func.count()).where(Clip.study_id == study_id).group_by(Clip.status)
        ).all())
    return GenerationProgress(sum(counts.values()), counts.get("ready", 0), counts.get("failed", 0))


def pregenerate(
    engine: Engine,
    data_dir: Path,
    study: int | str,
    generate: GenerateFn,
    metrics: MetricsFn | None = None,
    on_progress: Callable[[GenerationProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> GenerationProgress:
    """Generate every clip not yet cached, then the shuffled copies for attention checks.

    Re-running resumes: ready clips are skipped, failed ones retried. Each clip is written
    in a scratch dir and moved into place, so a file at the final path is always complete;
    no DB transaction is held while a clip generates.
    """
    data_dir = Path(data_dir)
    with Session(engine) as session, session.begin():
        row = get_study(session, study)
        study_id, systems = row.id, study_systems(row)
        row.status = "generating"
        todo = session.execute(
            select(Clip.id, Clip.system, Prompt.text, Clip.seed, Clip.path)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Clip.study_id == study_id, Clip.status != "ready")
            .order_by(Prompt.position, Clip.seed, Clip.id)
        ).all()

    for clip_id, system, prompt_text, seed, relpath in todo:
        if should_stop is not None and should_stop():
            break
        out_path = data_dir / relpath
        # The generator writes under the final file name in a scratch dir, so files it puts
        # beside the clip (e.g. out_path.with_suffix(".metrics.json")) keep their names;
        # the clip is moved last, so a clip at its final path is complete with its sidecars.
        scratch = out_path.parent / f".partial-{out_path.stem}"
        status, error, metrics_json = "ready", None, None
        try:
            if not out_path.exists():
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                generate(system, prompt_text, seed, scratch / out_path.name)
                if not (scratch / out_path.name).exists():
                    raise RuntimeError(f"the generator wrote no file at {scratch / out_path.name}")
                for sidecar in scratch.iterdir():
                    if sidecar.name != out_path.name:
                        os.replace(sidecar, out_path.parent / sidecar.name)
                os.replace(scratch / out_path.name, out_path)
            if metrics is not None:
                metrics_json = json.dumps({k: float(v) for k, v in metrics(out_path).items()})
        except Exception as exc:  # one bad clip must not stop the study; the row records why
            status, error = "failed", f"{type(exc).__name__}: {exc}".replace("\x00", "")
        shutil.rmtree(scratch, ignore_errors=True)
        with Session(engine) as session, session.begin():
            clip = session.get(Clip, clip_id)
            clip.status, clip.error = status, error
            if metrics_json is not None:
                clip.metrics_json = metrics_json
        if on_progress is not None:
            on_progress(generation_progress(engine, study_id))

    _make_attention_copies(engine, data_dir, study_id, systems[0], should_stop)
    progress = generation_progress(engine, study_id)
    with Session(engine) as session, session.begin():
        row = session.get(Study, study_id)
        if progress.pending:
            row.status = "pending"  # stopped early
        else:
            row.status = "ready" if progress.failed == 0 else "failed"
    return progress


def _make_attention_copies(
    engine: Engine, data_dir: Path, study_id: int, system: str, should_stop: Callable[[], bool] | None
) -> None:
    # One system's clips are enough material for attention checks: per clip, a copy with
    # shuffled frames and a plain copy under another name (the "identical" check).
    with Session(engine) as session:
        rows = session.execute(
            select(Clip.id, Clip.path, Clip.shuffled_path, Clip.twin_path).where(
                Clip.study_id == study_id, Clip.system == system, Clip.status == "ready",
                (Clip.shuffled_path.is_(None)) | (Clip.twin_path.is_(None)),
            )
        ).all()
    for clip_id, relpath, shuffled_rel, twin_rel in rows:
        if should_stop is not None and should_stop():
            return
        try:
            if shuffled_rel is None:
                new_rel = clip_relpath(study_id)
                write_shuffled_copy(data_dir / relpath, data_dir / new_rel, seed=clip_id)
                shuffled_rel = new_rel
            if twin_rel is None:
                new_rel = clip_relpath(study_id)
                shutil.copyfile(data_dir / relpath, data_dir / new_rel)
                twin_rel = new_rel
        except Exception:  # noqa: BLE001 — checks then fall back to what exists
            pass
        with Session(engine) as session, session.begin():
            clip = session.get(Clip, clip_id)
            clip.shuffled_path, clip.twin_path = shuffled_rel, twin_rel


class PregenJob:
    """`pregenerate` in a daemon thread; progress is read from the database, so it is also
    visible from other processes and after a restart."""

    def __init__(self, engine: Engine, data_dir: Path, study: int | str, generate: GenerateFn,
                 metrics: MetricsFn | None = None) -> None:
        self.engine, self.study = engine, study
        self.error: BaseException | None = None
        self.result: GenerationProgress | None = None
        self._stop = threading.Event()

        def run() -> None:
            try:
                self.result = pregenerate(engine, data_dir, study, generate, metrics,
                                          should_stop=self._stop.is_set)
            except BaseException as exc:  # noqa: BLE001 — surfaced through .error
                self.error = exc

        self._thread = threading.Thread(target=run, name=f"pregen-{study}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def progress(self) -> GenerationProgress:
        return generation_progress(self.engine, self.study)

    def cancel(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> GenerationProgress | None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.result


def start_pregeneration(engine: Engine, data_dir: Path, study: int | str, generate: GenerateFn,
                        metrics: MetricsFn | None = None) -> PregenJob:
    return PregenJob(engine, data_dir, study, generate, metrics)


# --- battles ------------------------------------------------------------------------


@dataclass(frozen=True)
class BattleView:
    """What the evaluator sees before voting: no system names, no battle kind.

    left_video/right_video are the clip files in the data dir; `StudyService.next_battle`
    swaps them for copies under opaque names before anything leaves the server.
    """

    battle_id: int
    study: str
    prompt: str
    category: str
    seed: int
    left_video: str
    right_video: str
    number: int  # 1-based position of this battle for the evaluator
    votes_done: int
    cap: int


def _lock_evaluator(session: Session, evaluator_id: str, source: str) -> None:
    """Create or touch the evaluator's row and hold its lock to the end of the transaction, so
    that one evaluator's deals run one at a time (PostgreSQL; SQLite's BEGIN IMMEDIATE already
    serialises them). A concurrent first insert raises IntegrityError: the caller retries."""
    row = session.get(Evaluator, evaluator_id, with_for_update=True)
    now = utc_now()
    if row is None:
        session.add(Evaluator(id=evaluator_id, source=source, created_at=now, last_seen_at=now))
        session.flush()
    else:
        row.last_seen_at = now


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _view(session: Session, data_dir: Path, study: Study, battle: Battle, votes_done: int) -> BattleView:
    prompt = session.get(Prompt, battle.prompt_id)
    return BattleView(
        battle_id=battle.id, study=study.name, prompt=prompt.text, category=prompt.category, seed=battle.seed,
        left_video=str(data_dir / battle.left_path), right_video=str(data_dir / battle.right_path),
        number=battle.seq + 1, votes_done=votes_done, cap=study.max_votes_per_evaluator,
    )


def _votes_done(session: Session, study_id: int, evaluator_id: str) -> int:
    return session.scalar(
        select(func.count()).select_from(Vote).where(Vote.study_id == study_id, Vote.evaluator_id == evaluator_id)
    ) or 0


def _draw_pair(session: Session, study: Study, evaluator_id: str, rng: random.Random) -> dict | None:
    """The least-voted (prompt, seed, system pair) this evaluator has not seen yet."""
    systems = study_systems(study)
    ready: dict[tuple[int, int], dict[str, str]] = {}
    for prompt_id, seed, system, path in session.execute(
        select(Clip.prompt_id, Clip.seed, Clip.system, Clip.path)
        .where(Clip.study_id == study.id, Clip.status == "ready")
        .order_by(Clip.id)  # the candidates' order feeds rng.choice: the same on every backend
    ):
        ready.setdefault((prompt_id, seed), {})[system] = path
    pair_battles = select(Battle.prompt_id, Battle.seed, Battle.left_system, Battle.right_system).where(
        Battle.study_id == study.id, Battle.kind == "pair")
    dealt: Counter = Counter()
    for p, s, left, right, n in session.execute(
        pair_battles.add_columns(func.count()).group_by(
            Battle.prompt_id, Battle.seed, Battle.left_system, Battle.right_system)
    ):
        dealt[(p, s, _pair_key(left, right))] += n
    seen = {(p, s, _pair_key(left, right))
            for p, s, left, right in session.execute(pair_battles.where(Battle.evaluator_id == evaluator_id))}
    candidates = [
        (prompt_id, seed, a, b)
        for (prompt_id, seed), paths in ready.items()
        for a, b in itertools.combinations(systems, 2)
        if a in paths and b in paths and (prompt_id, seed, _pair_key(a, b)) not in seen
    ]
    if not candidates:
        return None
    fewest = min(dealt[(p, s, _pair_key(a, b))] for p, s, a, b in candidates)
    prompt_id, seed, a, b = rng.choice(
        [c for c in candidates if dealt[(c[0], c[1], _pair_key(c[2], c[3]))] == fewest]
    )
    if rng.random() < 0.5:
        a, b = b, a
    paths = ready[(prompt_id, seed)]
    return dict(prompt_id=prompt_id, seed=seed, kind="pair", left_system=a, right_system=b,
                left_path=paths[a], right_path=paths[b], shuffled_side=None)


def _draw_attention_check(session: Session, study: Study, rng: random.Random) -> dict | None:
    system = study_systems(study)[0]
    clips = session.execute(
        select(Clip.prompt_id, Clip.seed, Clip.path, Clip.shuffled_path, Clip.twin_path)
        .where(Clip.study_id == study.id, Clip.system == system, Clip.status == "ready",
               Clip.shuffled_path.is_not(None), Clip.twin_path.is_not(None))
        .order_by(Clip.id)
    ).all()
    if not clips:
        return None  # copies not made yet: deal an ordinary pair
    prompt_id, seed, path, shuffled_path, twin_path = rng.choice(clips)
    side = rng.choice(("left", "right"))
    if rng.random() < 0.5:
        left, right = (shuffled_path, path) if side == "left" else (path, shuffled_path)
        return dict(prompt_id=prompt_id, seed=seed, kind="attention_shuffled", left_system=system,
                    right_system=system, left_path=left, right_path=right, shuffled_side=side)
    left, right = (twin_path, path) if side == "left" else (path, twin_path)
    return dict(prompt_id=prompt_id, seed=seed, kind="attention_identical", left_system=system,
                right_system=system, left_path=left, right_path=right, shuffled_side=None)


def next_battle(
    engine: Engine,
    data_dir: Path,
    study: int | str,
    evaluator_id: str,
    source: str = "browser",
    rng: random.Random | None = None,
) -> BattleView | None:
    """The evaluator's open battle, else a new one; None once the cap is reached or no
    unseen pair is left.

    An unvoted battle is returned again (a page reload must not skip or re-deal a pair).
    """
    if not evaluator_id:
        raise ValueError("an evaluator id is required")
    check_text(evaluator_id, Evaluator.id, "evaluator id")
    check_text(source, Evaluator.source, "source")
    rng = rng or random.Random()
    data_dir = Path(data_dir)
    for _ in range(5):  # retry only when a concurrent first call of the same evaluator inserted its row
        try:
            with Session(engine) as session, session.begin():
                row = get_study(session, study)
                _lock_evaluator(session, evaluator_id, source)
                voted = select(Vote.battle_id).where(Vote.evaluator_id == evaluator_id)
                open_battle = session.scalar(
                    select(Battle).where(
                        Battle.study_id == row.id, Battle.evaluator_id == evaluator_id, Battle.id.not_in(voted)
                    ).order_by(Battle.seq).limit(1)
                )
                done = _votes_done(session, row.id, evaluator_id)
                if open_battle is not None:
                    open_battle.served_at = utc_now()
                    return _view(session, data_dir, row, open_battle, done)
                if done >= row.max_votes_per_evaluator:
                    return None
                seq = session.scalar(
                    select(func.coalesce(func.max(Battle.seq) + 1, 0))
                    .where(Battle.study_id == row.id, Battle.evaluator_id == evaluator_id)
                )
                drawn = None
                if rng.random() < row.attention_rate:
                    drawn = _draw_attention_check(session, row, rng)
                if drawn is None:
                    drawn = _draw_pair(session, row, evaluator_id, rng)
                if drawn is None:
                    return None
                now = utc_now()
                battle = Battle(study_id=row.id, evaluator_id=evaluator_id, seq=seq, created_at=now,
                                served_at=now, **drawn)
                session.add(battle)
                session.flush()
                return _view(session, data_dir, row, battle, done)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not deal a battle to {evaluator_id!r} (concurrent requests kept colliding)")


# --- votes --------------------------------------------------------------------------


@dataclass(frozen=True)
class VoteReceipt:
    """Returned after a vote: the stored answers and the systems' names, now revealed.

    `recorded` is False when this battle already had this evaluator's vote (a retry or a
    second click); the stored answers are returned unchanged, which is what locks the vote.
    """

    vote_id: int
    battle_id: int
    recorded: bool
    left_system: str
    right_system: str
    answers: dict[str, str | None]
    attention_check: bool
    attention_failed: bool | None
    votes_done: int
    cap: int
    time_to_vote_ms: int = field(default=0)


def check_answers(answers: Mapping[str, str | None]) -> dict[str, str | None]:
    """Normalise answers to one per criterion (None = not answered); overall is required."""
    unknown = set(answers) - set(CRITERIA)
    if unknown:
        raise ValueError(f"unknown criteria {sorted(unknown)}; expected some of {CRITERIA}")
    clean: dict[str, str | None] = {}
    for criterion in CRITERIA:
        value = answers.get(criterion) or None
        if value is not None and (not isinstance(value, str) or value not in ANSWERS):
            shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:59]}…"
            raise ValueError(f"{criterion}: the answer must be one of {', '.join(ANSWERS)} "
                             f"(or empty where optional), got {shown}")
        clean[criterion] = value
    for criterion in REQUIRED_CRITERIA:
        if clean[criterion] is None:
            raise ValueError(f"{criterion}: the {criterion!r} answer is required "
                             f"(one of {', '.join(ANSWERS)})")
    return clean


def attention_failed(kind: str, shuffled_side: str | None, answers: Mapping[str, str | None]) -> bool | None:
    """Whether an attention check was failed (None for ordinary pairs); rules in the module doc."""
    if kind == "attention_identical":
        return answers.get("overall") in ("left", "right")
    if kind == "attention_shuffled":
        return any(a == shuffled_side for a in answers.values()) or answers.get("overall") == "both_good"
    return None


def _receipt(vote: Vote, recorded: bool, votes_done: int, cap: int) -> VoteReceipt:
    return VoteReceipt(
        vote_id=vote.id, battle_id=vote.battle_id, recorded=recorded, left_system=vote.left_system,
        right_system=vote.right_system, answers={c: getattr(vote, answer_column(c)) for c in CRITERIA},
        attention_check=vote.kind != "pair", attention_failed=vote.attention_failed,
        votes_done=votes_done, cap=cap, time_to_vote_ms=vote.time_to_vote_ms,
    )


def submit_vote(
    engine: Engine,
    battle_id: int,
    evaluator_id: str,
    answers: Mapping[str, str | None],
    app_version: str,
    extra: Mapping | None = None,
) -> VoteReceipt:
    """Store the evaluator's answers to a battle, exactly once.

    Time to vote is measured on the server, from when the battle was last served.
    """
    clean = check_answers(answers)
    check_text(app_version, Vote.app_version, "app_version")
    durable = engine.execution_options(**DURABLE)
    for _ in range(3):
        try:
            with Session(durable) as session, session.begin():
                battle = session.get(Battle, int(battle_id))
                if battle is None:
                    raise KeyError(f"battle_id: no battle {battle_id}; use the battle_id /ab_next returned")
                if battle.evaluator_id != evaluator_id:
                    raise PermissionError(f"battle {battle_id} was dealt to another evaluator")
                study = session.get(Study, battle.study_id)
                existing = session.scalar(
                    select(Vote).where(Vote.battle_id == battle.id, Vote.evaluator_id == evaluator_id)
                )
                if existing is not None:
                    done = _votes_done(session, study.id, evaluator_id)
                    return _receipt(existing, False, done, study.max_votes_per_evaluator)
                prompt = session.get(Prompt, battle.prompt_id)
                now = utc_now()
                vote = Vote(
                    study_id=study.id, battle_id=battle.id, evaluator_id=evaluator_id, prompt_id=prompt.id,
                    prompt=prompt.text, seed=battle.seed, category=prompt.category, kind=battle.kind,
                    left_system=battle.left_system, right_system=battle.right_system,
                    shuffled_side=battle.shuffled_side,
                    attention_failed=attention_failed(battle.kind, battle.shuffled_side, clean),
                    time_to_vote_ms=max(0, int((now - battle.served_at).total_seconds() * 1000)),
                    app_version=app_version, created_at=now,
                    extra_json=json.dumps(dict(extra)) if extra else None,
                    **{answer_column(c): v for c, v in clean.items()},
                )
                session.add(vote)
                session.flush()
                done = _votes_done(session, study.id, evaluator_id)
                return _receipt(vote, True, done, study.max_votes_per_evaluator)
        except IntegrityError:
            continue  # a concurrent submit of the same vote won: read it back
    raise RuntimeError(f"could not store the vote for battle {battle_id}")


# --- reading votes back ---------------------------------------------------------------

VOTE_FIELDS: tuple[str, ...] = (
    "vote_id", "study", "battle_id", "evaluator", "prompt_id", "prompt", "category", "seed", "kind",
    "left_system", "right_system", "shuffled_side", *(answer_column(c) for c in CRITERIA),
    "attention_failed", "time_to_vote_ms", "app_version", "created_at",
)


def load_votes(engine: Engine, study: int | str) -> list[dict]:
    """All votes of a study as plain dicts (the export format and the input of stats)."""
    with Session(engine) as session:
        row = get_study(session, study)
        votes = session.scalars(select(Vote).where(Vote.study_id == row.id).order_by(Vote.id)).all()
        return [
            {
                "vote_id": v.id, "study": row.name, "battle_id": v.battle_id, "evaluator": v.evaluator_id,
                "prompt_id": v.prompt_id, "prompt": v.prompt, "category": v.category, "seed": v.seed,
                "kind": v.kind, "left_system": v.left_system, "right_system": v.right_system,
                "shuffled_side": v.shuffled_side,
                **{answer_column(c): getattr(v, answer_column(c)) for c in CRITERIA},
                "attention_failed": v.attention_failed, "time_to_vote_ms": v.time_to_vote_ms,
                "app_version": v.app_version, "created_at": v.created_at.isoformat(),
            }
            for v in votes
        ]


def votes_done(engine: Engine, study: int | str, evaluator_id: str) -> int:
    with Session(engine) as session:
        return _votes_done(session, get_study(session, study).id, evaluator_id)


def study_info(engine: Engine, study: int | str) -> dict:
    with Session(engine) as session:
        row = get_study(session, study)
        return {
            "id": row.id, "name": row.name, "systems": study_systems(row), "seeds": json.loads(row.seeds_json),
            "status": row.status, "max_votes_per_evaluator": row.max_votes_per_evaluator,
            "attention_rate": row.attention_rate, "attention_fail_limit": row.attention_fail_limit,
        }


def load_clip_metrics(engine: Engine, study: int | str) -> dict[tuple[str, int, str], dict[str, float]]:
    """Automatic metrics stored by `pregenerate`, keyed (prompt, seed, system)."""
    with Session(engine) as session:
        row = get_study(session, study)
        rows = session.execute(
            select(Prompt.text, Clip.seed, Clip.system, Clip.metrics_json)
            .join(Prompt, Prompt.id == Clip.prompt_id)
            .where(Clip.study_id == row.id, Clip.metrics_json.is_not(None))
        ).all()
    return {(p, s, system): json.loads(m) for p, s, system, m in rows}
