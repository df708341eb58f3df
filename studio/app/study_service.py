"""The study's handlers: plain data in, plain data out, for the UI tab, the API and tests.

`StudyService` owns the engine, the data dir and the folder of served clips (none can live in
gr.State) and the background pre-generation jobs. app.py builds one and passes it to
`build_study_tab`. Pre-generation left unfinished by a restart resumes when a service with a
generator starts.

Inputs from a page or an API call are checked here, up front (`check_evaluator_id`,
`check_battle_id`, `check_flag`); a bad one raises ValueError with a message that names the
field and says what is expected.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Engine

from studio.study import battles, stats
from studio.study.battles import GenerateFn, MetricsFn, PregenJob, StudySpec
from studio.study.db import Vote, check_text, data_dir_from_env, make_engine
from studio.study.media import ServedMedia, default_served_dir, load_or_create_key

DEFAULT_APP_VERSION = os.environ.get("STUDIO_APP_VERSION", "dev")
EVALUATOR_ID_MAX_CHARS = 128
_EVALUATOR_ID = re.compile(r"[A-Za-z0-9:._@+-]+", re.ASCII)
EVALUATOR_ID_RULE = ("at most 128 characters: letters A-Z a-z, digits and : . _ - @ + "
                     "(e.g. 'api:alice')")
MEDIA_KEY_FILENAME = "study_media.key"


def shorten(value: object, limit: int = 60) -> str:
    """repr() of a value, cut to `limit` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(value))} characters)"


def check_evaluator_id(value: object) -> str:
    """A client-supplied evaluator id, stripped; ValueError unless it follows EVALUATOR_ID_RULE
    (no control or right-to-left characters, nothing that breaks a table or a CSV)."""
    if not isinstance(value, str):
        raise ValueError(f"evaluator: expected text, {EVALUATOR_ID_RULE}; got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ValueError("no evaluator id: sign in, let the page create a browser id, or pass your own id "
                         "(e.g. 'api:alice')")
    if len(value) > EVALUATOR_ID_MAX_CHARS:
        raise ValueError(f"evaluator: the id has {len(value)} characters; use {EVALUATOR_ID_RULE}")
    if not _EVALUATOR_ID.fullmatch(value):
        position, char = next((i, c) for i, c in enumerate(value) if not _EVALUATOR_ID.fullmatch(c))
        shown = repr(char) if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
        raise ValueError(f"evaluator: character {shown} at position {position} is not allowed; "
                         f"use {EVALUATOR_ID_RULE}")
    return value


def check_battle_id(value: object) -> int:
    """The battle id /ab_next returned: a positive whole number (3, 3.0 or "3"; not 1.5, not "abc")."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*\d{1,18}\s*", value, re.ASCII):
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"battle_id: expected the whole number that /ab_next returned as battle_id, "
                         f"got {shorten(value)}")
    return number


def check_flag(value: object, name: str) -> bool:
    """A yes/no input; "false" from a plain HTTP client must not count as true."""
    if isinstance(value, bool):
        return value
    if value in (0, 1, None) or (isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1", "")):
        return str(value).strip().lower() in ("true", "1")
    raise ValueError(f"{name}: expected true or false, got {shorten(value)}")


def resolve_evaluator(hf_username: str | None, supplied_id: object) -> tuple[str, str]:
    """(evaluator id, source). A signed-in HF user wins over any id the client supplies;
    otherwise the browser's stored id (or an API caller's own id) is used, once checked."""
    if hf_username:
        return f"hf:{hf_username}", "hf"
    supplied_id = check_evaluator_id(supplied_id if supplied_id is not None else "")
    if supplied_id.startswith("hf:"):
        raise PermissionError("'hf:' ids are reserved for signed-in Hugging Face users")
    source = "browser" if supplied_id.startswith("anon:") else "api"
    return supplied_id, source


def new_browser_evaluator_id() -> str:
    return f"anon:{uuid.uuid4()}"


class ViewingLog:
    """Which clips of a battle the page saw start and then end playing.

    The two clips end a few milliseconds apart and their handlers run at the same time; kept in a
    gr.State, each would write back its own copy and one side would be lost. Here one lock
    orders them, and the second to finish sees both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._battles: dict[int, dict[str, set[str]]] = {}

    def mark(self, battle_id: int, side: str, event: str) -> frozenset[str]:
        """Record "started" or "ended" for a side; returns the sides played to the end so far.
        An end without a start is not a viewing (a seek to the end, a script)."""
        if side not in ("left", "right") or event not in ("started", "ended"):
            raise ValueError(f"side must be left or right and event started or ended, got {side!r}, {event!r}")
        with self._lock:
            entry = self._battles.setdefault(int(battle_id), {"started": set(), "played": set()})
            if event == "started":
                entry["started"].add(side)
            elif side in entry["started"]:
                entry["played"].add(side)
            return frozenset(entry["played"])

    def played(self, battle_id: int) -> frozenset[str]:
        with self._lock:
            return frozenset(self._battles.get(int(battle_id), {}).get("played", ()))

    def forget(self, battle_id: int) -> None:
        with self._lock:
            self._battles.pop(int(battle_id), None)


class StudyService:
    def __init__(
        self,
        data_dir: str | Path | None = None,
        db_url: str | None = None,
        generate: GenerateFn | None = None,
        metrics: MetricsFn | None = None,
        app_version: str = DEFAULT_APP_VERSION,
        engine: Engine | None = None,
        served_dir: str | Path | None = None,
    ) -> None:
        self.data_dir = data_dir_from_env(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine or make_engine(db_url, self.data_dir)
        # Checked once at start: a version the votes table cannot store would refuse every vote.
        self.app_version = check_text(app_version, Vote.app_version, "STUDIO_APP_VERSION")
        self.generate, self.metrics = generate, metrics
        self.jobs: dict[str, PregenJob] = {}
        # Pages get copies of the clips under opaque names, from a folder that holds nothing else;
        # the data dir (database, exports, runs) is never served.
        self.media = ServedMedia(Path(served_dir) if served_dir else default_served_dir(),
                                 load_or_create_key(self.data_dir / MEDIA_KEY_FILENAME))
        self.viewings = ViewingLog()
        self._last_served: dict[str, int] = {}  # evaluator -> battle whose clips are published
        # One writer at a time inside this process: SQLite allows a single writer anyway, and
        # waiting on a lock hands over at once, while SQLite's busy handler sleeps in growing steps
        # (the 2 s p95 tail under 20 concurrent evaluators).
        self._write_lock = threading.Lock()
        if self.generate is not None:
            self.resume_pregeneration()

    # --- administration ---
    def create_study(self, spec: StudySpec) -> int:
        return battles.create_study(self.engine, spec)

    def start_pregeneration(self, study: str) -> PregenJob:
        """One background job per study; asking again while it runs returns the same job."""
        if self.generate is None:
            raise RuntimeError("no generator was given to StudyService; clips cannot be generated")
        job = self.jobs.get(study)
        if job is None or not job.running:
            job = battles.start_pregeneration(self.engine, self.data_dir, study, self.generate, self.metrics)
            self.jobs[study] = job
        return job

    def resume_pregeneration(self) -> list[str]:
        """Start the jobs a restart interrupted (studies with clips still pending); their names."""
        names = battles.studies_to_resume(self.engine)
        for name in names:
            self.start_pregeneration(name)
        return names

    def progress(self, study: str) -> dict:
        p = battles.generation_progress(self.engine, study)
        job = self.jobs.get(study)
        return {"total": p.total, "ready": p.ready, "failed": p.failed, "pending": p.pending,
                "fraction": p.fraction, "running": bool(job and job.running)}

    def list_studies(self) -> list[str]:
        return [s["name"] for s in battles.list_studies(self.engine)]

    # --- voting ---
    def next_battle(self, study: str, evaluator_id: str, source: str = "api") -> dict:
        """{"done": False, battle fields...} or {"done": True, "message": ...}.

        left_video/right_video are the served copies (paths inside `self.media.folder`); the
        evaluator's previous battle's copies are withdrawn.
        """
        with self._write_lock:
            view = battles.next_battle(self.engine, self.data_dir, study, evaluator_id, source=source)
        previous = self._last_served.get(evaluator_id)
        if previous is not None and (view is None or previous != view.battle_id):
            self.media.withdraw(previous)
            self.viewings.forget(previous)
            self._last_served.pop(evaluator_id, None)
        if view is None:
            info = battles.study_info(self.engine, study)
            done = battles.votes_done(self.engine, study, evaluator_id)
            reason = ("you reached this study's limit of votes per evaluator, thank you"
                      if done >= info["max_votes_per_evaluator"] else
                      "no unseen pair is ready for you right now; thank you")
            return {"done": True, "message": reason, "votes_done": done, "cap": info["max_votes_per_evaluator"]}
        fields = asdict(view)
        for side in ("left", "right"):
            fields[f"{side}_video"] = str(self.media.publish(view.battle_id, side, Path(fields[f"{side}_video"])))
        self._last_served[evaluator_id] = view.battle_id
        return {"done": False, **fields}

    def mark_viewing(self, battle_id: int, side: str, event: str) -> frozenset[str]:
        """The page saw a clip start or end playing; returns the sides watched to the end."""
        return self.viewings.mark(battle_id, side, event)

    def vote(self, battle_id: object, evaluator_id: str, answers: dict[str, str | None],
             extra: dict | None = None) -> dict:
        battle_id = check_battle_id(battle_id)
        with self._write_lock:
            receipt = battles.submit_vote(self.engine, battle_id, evaluator_id, answers, self.app_version, extra)
        self.viewings.forget(battle_id)
        return asdict(receipt)

    # --- results ---
    def results(self, study: str, exclude_careless: object = False, n_boot: int = 2000) -> dict:
        """The study's statistics (evaluator ids included: the callers check admin rights)."""
        exclude_careless = check_flag(exclude_careless, "exclude_careless")
        info = battles.study_info(self.engine, study)
        votes = battles.load_votes(self.engine, study)
        summary = stats.summarize(
            votes, info["systems"], info["attention_fail_limit"],
            clip_metrics=battles.load_clip_metrics(self.engine, study) or None,
            exclude_careless=exclude_careless, n_boot=n_boot,
        )
        return {"study": info, **summary}

    def export(self, study: str, out_dir: str | Path | None = None) -> tuple[Path, Path]:
        """Write the raw votes as CSV and JSON in `out_dir` (default data_dir/exports); both paths."""
        votes = battles.load_votes(self.engine, study)
        info = battles.study_info(self.engine, study)
        stem = Path(out_dir or self.data_dir / "exports") / f"study{info['id']}_votes"
        return (stats.export_votes_csv(votes, stem.with_suffix(".csv"), battles.VOTE_FIELDS),
                stats.export_votes_json(votes, stem.with_suffix(".json")))


def answers_from_fields(overall: str | None, consistency_3d: str | None = None,
                        camera: str | None = None) -> dict[str, str | None]:
    """Map the per-criterion fields of the UI/API to the `CRITERIA` keys."""
    return {"3d_consistency": consistency_3d, "camera": camera, "overall": overall}
