"""Load test of the A/B study: N concurrent evaluators × M votes against the running app.

Measures what the issue asks (not a timed test): lost and duplicated votes, vote round trip
p50/p95, with an app restart in the middle. Everything runs on 127.0.0.1.

    python scripts/load_votes.py                      # 20 × 50, restart at half way
    python scripts/load_votes.py --evaluators 4 --votes 10 --restart-at 0   # quick, no restart
    python scripts/load_votes.py --transport gradio_client                 # through the Python client
    python scripts/load_votes.py --postgres --think 4                      # on a throwaway PostgreSQL server
    python scripts/load_votes.py --db-url postgresql://user:pw@host/db     # on a database of yours

It prepares a study of tiny synthetic clips in a fresh data dir (votes in SQLite there unless
`--db-url` or `--postgres` names another database), launches the app as a
subprocess (`app.py --port --data-dir` when app.py supports them, else the study tab alone:
`python -m studio.ui.study_tab`), drives it with gradio_client from one thread per
evaluator, kills and relaunches it once the given share of votes is in, then checks every
acknowledged vote against the database.

A failed call is retried with the same battle id: voting is idempotent, so a vote whose
answer was lost in the restart is found, not stored twice (`recorded=false`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HOST = "127.0.0.1"  # loopback only, by design


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def prepare_study(data_dir: Path, name: str, votes_per_evaluator: int, db_url: str | None = None) -> None:
    """A study with enough distinct pairs for every evaluator to reach the cap."""
    from studio.study.battles import PromptSpec, StudySpec
    from studio.study.media import generate_synthetic
    from studio.app.study_service import StudyService

    categories = ("static", "camera", "dynamic")
    n_prompts = max(3, (votes_per_evaluator + 1) // 2 + 2)  # × 2 seeds > cap, attention checks aside
    prompts = [PromptSpec(f"load prompt {i}: a cube, camera move {i % 5}", categories[i % 3]) for i in range(n_prompts)]
    service = StudyService(data_dir=data_dir, db_url=db_url, generate=generate_synthetic, app_version="load")
    service.create_study(StudySpec(name, prompts, [0, 1], ["baseline", "tuned"],
                                   max_votes_per_evaluator=votes_per_evaluator, attention_rate=0.1))
    service.start_pregeneration(name).join()
    progress = service.progress(name)
    if progress["ready"] != progress["total"]:
        raise RuntimeError(f"clip generation failed: {progress}")
    service.engine.dispose()


def app_command(mode: str, port: int, data_dir: Path) -> list[str]:
    app_py = REPO / "app.py"
    if mode == "auto":
        mode = "standalone"
        if app_py.exists():
            helptext = subprocess.run([sys.executable, str(app_py), "--help"], cwd=REPO, capture_output=True,
                                      text=True, timeout=120).stdout
            if "--data-dir" in helptext and "--port" in helptext:
                mode = "app"
    if mode == "app":
        return [sys.executable, str(app_py), "--port", str(port), "--data-dir", str(data_dir)]
    return [sys.executable, "-m", "studio.ui.study_tab", "--port", str(port), "--data-dir", str(data_dir),
            "--host", HOST]


class App:
    """The app subprocess; `restart()` kills it (SIGKILL: no clean shutdown) and relaunches."""

    def __init__(self, command: list[str], port: int, data_dir: Path, log_path: Path,
                 db_url: str | None = None) -> None:
        self.command, self.port, self.log_path = command, port, log_path
        self.env = {**os.environ, "STUDIO_DATA_DIR": str(data_dir), "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        self.env.pop("STUDIO_DB_URL", None)
        if db_url:
            self.env["STUDIO_DB_URL"] = db_url
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self, timeout_s: float = 180) -> float:
        t0 = time.perf_counter()
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"the app did not answer within {timeout_s} s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def restart(self) -> tuple[float, float]:
        """Kill, relaunch; returns (downtime s, start s)."""
        t0 = time.perf_counter()
        self.stop(signal.SIGKILL)
        start_s = self.start()
        return time.perf_counter() - t0, start_s


@dataclass
class EvaluatorLog:
    evaluator: str
    acked: dict[int, bool] = field(default_factory=dict)  # battle id -> recorded (False: found, was a retry)
    vote_rtt_s: list[tuple[float, float]] = field(default_factory=list)  # (start time, round trip)
    next_rtt_s: list[float] = field(default_factory=list)
    errors: int = 0
    finished: str = ""


class AppError(RuntimeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Evaluator(threading.Thread):
    ANSWERS = ("left", "right", "both_good", "both_bad")

    def __init__(self, url: str, study: str, name: str, votes: int, progress: "Progress", deadline: float,
                 transport: str, think_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.study, self.votes, self.progress, self.deadline = url, study, votes, progress, deadline
        self.transport, self.think_s = transport, think_s
        self.log = EvaluatorLog(name)
        self.client = None

    def _once(self, args: tuple, api_name: str):
        if self.transport == "gradio_client":
            from gradio_client import Client

            if self.client is None:
                self.client = Client(self.url, download_files=False, verbose=False)
            t0 = time.perf_counter()
            return self.client.predict(*args, api_name=api_name), t0
        # Plain HTTP on one keep-alive connection per evaluator.
        if self.client is None:
            self.client = http.client.HTTPConnection(HOST, int(self.url.rsplit(":", 1)[1].strip("/")), timeout=30)
        t0 = time.perf_counter()
        self.client.request("POST", f"/gradio_api/run{api_name}", body=json.dumps({"data": list(args)}),
                            headers={"Content-Type": "application/json"})
        response = self.client.getresponse()
        payload = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise AppError(str(payload.get("error", payload)), response.status)
        return payload["data"][0], t0

    def _call(self, *args, api_name: str):
        """One call with bounded retries; the client is rebuilt after a failure (the app may
        have restarted, and a client is bound to one server session)."""
        for attempt in range(600):
            if time.monotonic() > self.deadline:
                raise TimeoutError("load test deadline")
            try:
                result, t0 = self._once(args, api_name)
                return result, t0, time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 — connection drops during the restart
                # A 4xx is the app refusing this input (it answers 400/403/404 with a message):
                # retrying cannot help. Connection errors and 5xx during the restart are retried.
                if isinstance(exc, AppError) and 400 <= exc.status < 500:
                    raise
                if "dealt to another evaluator" in str(exc) or "required" in str(exc):
                    raise
                self.log.errors += 1
                if self.client is not None and self.transport == "http":
                    self.client.close()
                self.client = None
                time.sleep(min(0.2 * (attempt + 1), 1.0))
        raise RuntimeError(f"{api_name}: no answer after 600 attempts")

    def run(self) -> None:
        import random

        rng = random.Random(self.log.evaluator)
        try:
            for _ in range(self.votes * 4):  # bounded; the cap ends it after `votes`
                battle, _, rtt = self._call(self.study, self.log.evaluator, api_name="/ab_next")
                self.log.next_rtt_s.append(rtt)
                if battle["done"]:
                    self.log.finished = battle["message"]
                    return
                if self.think_s > 0:  # watching both clips: the UI enables the vote buttons only then
                    time.sleep(rng.uniform(0.5, 1.5) * self.think_s)
                receipt, t0, rtt = self._call(battle["battle_id"], self.log.evaluator, rng.choice(self.ANSWERS),
                                              rng.choice(self.ANSWERS), rng.choice(self.ANSWERS),
                                              api_name="/ab_vote")
                self.log.vote_rtt_s.append((t0, rtt))
                self.log.acked[receipt["battle_id"]] = receipt["recorded"]
                self.progress.add()
            self.log.finished = "loop bound reached"
        except Exception as exc:  # noqa: BLE001 — reported in the summary
            self.log.finished = f"error: {type(exc).__name__}: {exc}"


class Progress:
    def __init__(self) -> None:
        self.count, self.lock = 0, threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1


def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def verify(data_dir: Path, study: str, logs: list[EvaluatorLog], db_url: str | None = None) -> dict:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from studio.study.battles import load_votes
    from studio.study.db import Vote, make_engine

    engine = make_engine(db_url, data_dir=data_dir)
    stored = load_votes(engine, study)
    with Session(engine) as s:
        dup_groups = s.execute(
            select(Vote.battle_id, Vote.evaluator_id, func.count()).group_by(Vote.battle_id, Vote.evaluator_id)
            .having(func.count() > 1)
        ).all()
    engine.dispose()
    stored_keys = {(v["battle_id"], v["evaluator"]) for v in stored}
    acked = {(b, log.evaluator) for log in logs for b in log.acked}
    return {
        "votes_stored": len(stored),
        "votes_acknowledged": len(acked),
        "lost": len(acked - stored_keys),
        "duplicated_rows": sum(n - 1 for *_, n in dup_groups),
        "stored_but_never_acknowledged": len(stored_keys - acked),
        "retries_answered_from_existing_vote": sum(not r for log in logs for r in log.acked.values()),
        "attention_checks": sum(v["kind"] != "pair" for v in stored),
        "per_evaluator_min_max": [min(len(l.acked) for l in logs), max(len(l.acked) for l in logs)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluators", type=int, default=20)
    parser.add_argument("--votes", type=int, default=50, help="votes per evaluator (the study's cap)")
    parser.add_argument("--restart-at", type=float, default=0.5,
                        help="restart the app once this share of votes is in; 0 = no restart")
    parser.add_argument("--app", choices=("auto", "app", "standalone"), default="auto")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--transport", choices=("http", "gradio_client"), default="http",
                        help="http: POST /gradio_api/run/<name> (no queue); gradio_client: the Python client (SSE)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="mean seconds between receiving a pair and voting (uniform 0.5-1.5x); 0 = back to back, "
                             "the saturation case. A person cannot vote before both clips have played once")
    parser.add_argument("--db-url", default=None, help="SQLAlchemy URL of the votes database (default: SQLite "
                        "in the data dir); the app gets it as STUDIO_DB_URL")
    parser.add_argument("--postgres", action="store_true",
                        help="start a throwaway PostgreSQL server for the run (scripts/throwaway_postgres.py, "
                             "PostgreSQL's default durability settings) and use it")
    parser.add_argument("--timeout", type=float, default=1200, help="overall bound in seconds")
    parser.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.postgres and args.db_url:
        parser.error("--postgres and --db-url exclude each other")
    if args.postgres:
        from scripts.throwaway_postgres import ThrowawayPostgres

        with ThrowawayPostgres(durable=True) as server:
            print(f"throwaway PostgreSQL started in {server.start_s:.1f} s", flush=True)
            return run(args, server.create_database("load_votes"))
    return run(args, args.db_url)


def run(args: argparse.Namespace, db_url: str | None) -> dict:
    from sqlalchemy.engine import make_url

    data_dir = (args.data_dir or Path(tempfile.mkdtemp(prefix="load_votes_"))).resolve()
    study = f"load-{int(time.time())}"
    t0 = time.perf_counter()
    prepare_study(data_dir, study, args.votes, db_url)
    prep_s = time.perf_counter() - t0
    port = args.port or free_port()
    app = App(app_command(args.app, port, data_dir), port, data_dir, data_dir / "app.log", db_url)
    print(f"data dir {data_dir}; study {study} ready in {prep_s:.1f} s; app: {' '.join(app.command)}", flush=True)
    report: dict = {"transport": args.transport, "think_s": args.think, "evaluators": args.evaluators, "votes_per_evaluator": args.votes, "app_command": app.command,
                    "data_dir": str(data_dir), "study": study,
                    "database": make_url(db_url).get_backend_name() if db_url else "sqlite"}
    try:
        report["app_start_s"] = round(app.start(), 2)
        deadline = time.monotonic() + args.timeout
        progress = Progress()
        workers = [Evaluator(app.url, study, f"load:{i:02d}", args.votes, progress, deadline, args.transport,
                         args.think)
                   for i in range(args.evaluators)]
        t_load = time.perf_counter()
        for w in workers:
            w.start()
        restart_window: tuple[float, float] | None = None
        target = args.evaluators * args.votes
        if args.restart_at > 0:
            while progress.count < args.restart_at * target and any(w.is_alive() for w in workers):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if any(w.is_alive() for w in workers):
                at = progress.count
                t_kill = time.perf_counter()
                downtime, start_s = app.restart()
                restart_window = (t_kill, time.perf_counter())
                report["restart"] = {"after_votes": at, "downtime_s": round(downtime, 2), "start_s": round(start_s, 2)}
                print(f"restarted after {at} votes; down {downtime:.1f} s", flush=True)
        for w in workers:
            w.join(timeout=max(1.0, deadline - time.monotonic()))
        report["load_wall_s"] = round(time.perf_counter() - t_load, 1)
    finally:
        app.stop()

    logs = [w.log for w in workers]
    rtts = [rtt for log in logs for _, rtt in log.vote_rtt_s]
    steady = rtts
    if restart_window is not None:
        # Calls started during the restart, or in the 5 s after it, measure the restart, not the app.
        lo, hi = restart_window[0], restart_window[1] + 5.0
        steady = [rtt for log in logs for t, rtt in log.vote_rtt_s if not lo <= t <= hi]
    ms = lambda x: None if x is None else round(1000 * x, 1)  # noqa: E731
    report.update({
        "vote_rtt_ms": {"n": len(rtts), "p50": ms(percentile(rtts, 50)), "p95": ms(percentile(rtts, 95)),
                        "max": ms(max(rtts) if rtts else None)},
        "vote_rtt_ms_outside_restart": {"n": len(steady), "p50": ms(percentile(steady, 50)),
                                        "p95": ms(percentile(steady, 95))},
        "next_rtt_ms": {"p50": ms(percentile([r for l in logs for r in l.next_rtt_s], 50)),
                        "p95": ms(percentile([r for l in logs for r in l.next_rtt_s], 95))},
        "client_errors_retried": sum(l.errors for l in logs),
        "evaluators_not_finished": [f"{l.evaluator}: {l.finished}" for l in logs if "limit" not in l.finished],
        **verify(data_dir, study, logs, db_url),
    })
    print(json.dumps(report, indent=1))
    if args.report:
        args.report.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
