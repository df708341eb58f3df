"""The study's handlers: plain data in, plain data out, for the UI tab, the API and tests.

`StudyService` owns the engine and the data dir (neither can live in gr.State) and the
background pre-generation jobs. app.py builds one and passes it to `build_study_tab`.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import Engine

from studio.study import battles, stats
from studio.study.battles import GenerateFn, MetricsFn, PregenJob, StudySpec
from studio.study.db import data_dir_from_env, make_engine

DEFAULT_APP_VERSION = os.environ.get("STUDIO_APP_VERSION", "dev")


def resolve_evaluator(hf_username: str | None, supplied_id: str | None) -> tuple[str, str]:
    """(evaluator id, source). A signed-in HF user wins over any id the client supplies;
    otherwise the browser's stored id (or an API caller's own id) is used as given."""
    if hf_username:
        return f"hf:{hf_username}", "hf"
    supplied_id = (supplied_id or "").strip()
    if not supplied_id:
        raise ValueError("no evaluator id: sign in, or let the page create a browser id")
    if supplied_id.startswith("hf:"):
        raise PermissionError("'hf:' ids are reserved for signed-in Hugging Face users")
    source = "browser" if supplied_id.startswith("anon:") else "api"
    return supplied_id, source


def new_browser_evaluator_id() -> str:
    return f"anon:{uuid.uuid4()}"


class StudyService:
    def __init__(
        self,
        data_dir: str | Path | None = None,
        db_url: str | None = None,
        generate: GenerateFn | None = None,
        metrics: MetricsFn | None = None,
        app_version: str = DEFAULT_APP_VERSION,
        engine: Engine | None = None,
    ) -> None:
        self.data_dir = data_dir_from_env(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine or make_engine(db_url, self.data_dir)
        self.generate, self.metrics, self.app_version = generate, metrics, app_version
        self.jobs: dict[str, PregenJob] = {}
        # One writer at a time inside this process: SQLite allows a single writer anyway, and
        # waiting on a lock hands over at once, while SQLite's busy handler sleeps in growing steps
        # (the 2 s p95 tail under 20 concurrent evaluators).
        self._write_lock = threading.Lock()

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

    def progress(self, study: str) -> dict:
        p = battles.generation_progress(self.engine, study)
        job = self.jobs.get(study)
        return {"total": p.total, "ready": p.ready, "failed": p.failed, "pending": p.pending,
                "fraction": p.fraction, "running": bool(job and job.running)}

    def list_studies(self) -> list[str]:
        return [s["name"] for s in battles.list_studies(self.engine)]

    # --- voting ---
    def next_battle(self, study: str, evaluator_id: str, source: str = "api") -> dict:
        """{"done": False, battle fields...} or {"done": True, "message": ...}."""
        with self._write_lock:
            view = battles.next_battle(self.engine, self.data_dir, study, evaluator_id, source=source)
        if view is None:
            info = battles.study_info(self.engine, study)
            done = battles.votes_done(self.engine, study, evaluator_id)
            reason = ("you reached this study's limit of votes per evaluator, thank you"
                      if done >= info["max_votes_per_evaluator"] else
                      "no unseen pair is ready for you right now; thank you")
            return {"done": True, "message": reason, "votes_done": done, "cap": info["max_votes_per_evaluator"]}
        return {"done": False, **asdict(view)}

    def vote(self, battle_id: int, evaluator_id: str, answers: dict[str, str | None],
             extra: dict | None = None) -> dict:
        with self._write_lock:
            receipt = battles.submit_vote(self.engine, battle_id, evaluator_id, answers, self.app_version, extra)
        return asdict(receipt)

    # --- results ---
    def results(self, study: str, exclude_careless: bool = False, n_boot: int = 2000) -> dict:
        info = battles.study_info(self.engine, study)
        votes = battles.load_votes(self.engine, study)
        summary = stats.summarize(
            votes, info["systems"], info["attention_fail_limit"],
            clip_metrics=battles.load_clip_metrics(self.engine, study) or None,
            exclude_careless=exclude_careless, n_boot=n_boot,
        )
        return {"study": info, **summary}

    def export(self, study: str) -> tuple[Path, Path]:
        """Write the raw votes as CSV and JSON under data_dir/exports; returns both paths."""
        votes = battles.load_votes(self.engine, study)
        info = battles.study_info(self.engine, study)
        stem = self.data_dir / "exports" / f"study{info['id']}_votes"
        return (stats.export_votes_csv(votes, stem.with_suffix(".csv"), battles.VOTE_FIELDS),
                stats.export_votes_json(votes, stem.with_suffix(".json")))


def answers_from_fields(overall: str | None, consistency_3d: str | None = None,
                        camera: str | None = None) -> dict[str, str | None]:
    """Map the per-criterion fields of the UI/API to the `CRITERIA` keys."""
    return {"3d_consistency": consistency_3d, "camera": camera, "overall": overall}
