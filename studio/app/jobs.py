"""Background training runs: one OS process per run, all state on disk, survives app restarts.

Each run lives in ``<runs_dir>/<name>/``: ``job.json`` (what was asked and where it stands),
``train.log`` (the trainer's console), ``exit_code`` (written by a small shell wrapper when the
trainer ends, so a restarted app still learns how a run it did not start ended), plus whatever
the trainer writes (``metrics.jsonl``, checkpoints, samples). Runs beyond ``max_running`` wait
in a queue; ``poll()`` starts them in submission order, and a watcher thread calls it while any
run is active, so the queue moves on with nobody watching the page. A lock file serialises
managers of the same runs directory (an app restarted while the old one still runs).

Cancel sends the trainer SIGINT: it stops at its next safe point and saves a checkpoint, however
long that takes (nothing kills it on a timer). Cancel again forces it: a second signal, on which
the trainer stops at once, keeping its last checkpoint (never in the middle of writing one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.util import atomic_write_json

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ACTIVE = ("queued", "running", "cancelling")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunState:
    name: str
    preset: str
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = "queued"  # queued | running | cancelling | finished | failed | cancelled | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    returncode: int | None = None
    resume: bool = False
    attempts: int = 0
    forced: bool = False  # cancel was forced (the trainer was told to stop without saving the current epoch)

    def command(self, run_dir: Path, python: str, module: str = "training.train") -> list[str]:
        cmd = [python, "-m", module, "--preset", self.preset, "--out", str(run_dir)]
        if self.resume:
            cmd.append("--resume")
        cmd += [f"{k}={v}" for k, v in self.overrides.items()]
        return cmd


def validate_run_name(name: str) -> str:
    name = (name or "").strip()
    if not RUN_NAME.match(name):
        raise ValueError("run name must be 1-64 characters of letters, digits, '_', '-' or '.', "
                         f"starting with a letter or digit; got {name!r}")
    return name


def _alive(pid: int | None, run_dir: Path) -> bool:
    """Is `pid` still our trainer? (Checks the command line, so a reused PID does not count.)"""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True
    return str(run_dir) in cmdline


class JobManager:
    """Queue, start, cancel and resume training runs; every change is written to job.json first."""

    def __init__(self, runs_dir: Path | str, max_running: int = 1, python: str | None = None,
                 env: dict[str, str] | None = None, module: str = "training.train", watch_interval_s: float = 1.0):
        self.runs_dir = Path(runs_dir).resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_running = max_running
        self.python = python or sys.executable
        self.env = env or {}
        self.module = module  # the trainer CLI (python -m MODULE --preset P --out DIR [--resume] k=v ...)
        self.watch_interval_s = watch_interval_s  # 0 = no watcher thread (poll() only when called)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_file = None
        self._children: dict[str, subprocess.Popen] = {}
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self.recover()
        self.poll()

    @contextlib.contextmanager
    def _locked(self):
        """This manager's lock, plus an flock on the runs directory held by the outermost caller."""
        with self._lock:
            if self._lock_depth == 0:
                self._lock_file = open(self.runs_dir / ".jobs.lock", "a")
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    # ---------------------------------------------------------------- watcher
    def _ensure_watcher(self) -> None:
        with self._lock:
            if self.watch_interval_s > 0 and self._watcher is None and not self._closed.is_set():
                self._watcher = threading.Thread(target=self._watch, name="jobs-watcher", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        """poll() every watch_interval_s while a run is active; ends when none is (submit restarts it)."""
        while not self._closed.wait(self.watch_interval_s):
            try:
                with self._locked():
                    if not any(s.status in ACTIVE for s in self.poll(watch=False)):
                        self._watcher = None
                        return
            except Exception as e:  # noqa: BLE001 - a bad moment on disk must not end the watcher for good
                print(f"jobs watcher: {e}", file=sys.stderr)
        with self._lock:
            self._watcher = None

    def close(self) -> None:
        """Stop the watcher thread (runs go on; a new manager picks them up)."""
        self._closed.set()

    # ---------------------------------------------------------------- state on disk
    def run_dir(self, name: str) -> Path:
        path = (self.runs_dir / validate_run_name(name)).resolve()
        if path.parent != self.runs_dir:
            raise ValueError(f"run {name!r} is outside the runs directory")
        return path

    def _read(self, name: str) -> RunState:
        path = self.run_dir(name) / "job.json"
        if not path.exists():
            raise KeyError(f"no run named {name!r}")
        return RunState(**json.loads(path.read_text()))

    def _write(self, state: RunState) -> None:
        atomic_write_json(self.run_dir(state.name) / "job.json", asdict(state))

    def list(self) -> list[RunState]:
        out = []
        for p in sorted(self.runs_dir.glob("*/job.json")):
            try:
                out.append(RunState(**json.loads(p.read_text())))
            except (ValueError, TypeError):
                continue  # a foreign or damaged file: not ours to manage
        return sorted(out, key=lambda s: s.created)

    def get(self, name: str) -> RunState:
        with self._lock:
            return self._read(name)

    # ---------------------------------------------------------------- lifecycle
    def recover(self) -> None:
        """After a restart: runs whose process is gone are finished (exit code known) or interrupted."""
        with self._locked():
            for s in self.list():
                if s.status in ("running", "cancelling") and not _alive(s.pid, self.run_dir(s.name)):
                    self._finish(s)

    def submit(self, name: str, preset: str, overrides: dict[str, str] | None = None) -> RunState:
        name = validate_run_name(name)
        with self._locked():
            run_dir = self.run_dir(name)
            if (run_dir / "job.json").exists():
                raise ValueError(f"a run named {name!r} already exists; pick another name or resume it")
            run_dir.mkdir(parents=True)
            state = RunState(name=name, preset=preset, overrides={str(k): str(v) for k, v in (overrides or {}).items()})
            self._write(state)
        self.poll()
        return self.get(name)

    def resume(self, name: str, overrides: dict[str, str] | None = None, from_checkpoint: bool = True) -> RunState:
        """Queue a stopped run again: from its latest checkpoint (--resume), or from the start when
        from_checkpoint is False (a run stopped before it saved one). `overrides` change or add
        knobs for the rest of the run (e.g. a larger max_minutes or epochs)."""
        with self._locked():
            s = self._read(name)
            if s.status in ACTIVE:
                raise ValueError(f"run {name!r} is {s.status}; only a stopped run can be resumed")
            s.overrides.update({str(k): str(v) for k, v in (overrides or {}).items()})
            s.status, s.resume, s.returncode, s.ended, s.pid, s.forced = "queued", from_checkpoint, None, None, None, False
            self._write(s)
        self.poll()
        return self.get(name)

    def cancel(self, name: str, force: bool = False) -> RunState:
        """Queued runs are dropped; a running one gets SIGINT and saves a checkpoint at its next safe
        point, however long that takes. force (only while cancelling): a second SIGINT, on which the
        trainer stops at once with its last checkpoint (after the one it may be writing)."""
        with self._locked():
            s = self._read(name)
            if s.status == "queued":
                s.status, s.ended = "cancelled", time.time()
                self._write(s)
                return s
            if s.status == "cancelling" and not force:
                raise ValueError(f"run {name!r} is already stopping at its next safe point; force it to stop at once")
            if s.status not in ("running", "cancelling"):
                raise ValueError(f"run {name!r} is {s.status}; nothing to cancel")
            s.forced = s.status == "cancelling"
            s.status = "cancelling"
            self._write(s)
            if s.pid and _alive(s.pid, self.run_dir(name)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(s.pid, signal.SIGINT)  # the wrapper passes it on to the trainer
        return self.get(name)

    def delete(self, name: str) -> None:
        """Remove a stopped run's folder (checkpoints, samples, logs). Only managed runs (with a
        job.json) inside the runs directory, never an active one."""
        with self._locked():
            s = self._read(name)  # validates the name and that the run is ours
            if s.status in ACTIVE:
                raise ValueError(f"run {name!r} is {s.status}; cancel it and wait until it has stopped before deleting it")
            shutil.rmtree(self.run_dir(name))  # run_dir() refuses names and links leading outside runs_dir

    def _finish(self, s: RunState) -> None:
        code_file = self.run_dir(s.name) / "exit_code"
        code = None
        if code_file.exists():
            try:
                code = int(code_file.read_text().strip())
            except ValueError:
                code = None
        s.returncode = code
        s.ended = s.ended or time.time()
        if s.status == "cancelling":
            s.status = "cancelled"
        elif code == 0:
            s.status = "finished"
        elif code is None:
            s.status = "interrupted"  # the process vanished without the wrapper noting an exit
        else:
            s.status = "failed"
        self._children.pop(s.name, None)
        self._write(s)

    def poll(self, watch: bool = True) -> list[RunState]:
        """Reap ended runs, then start queued ones while there is room. Cheap; the watcher thread
        calls it while a run is active, and anyone may call it."""
        with self._locked():
            states = self.list()
            for s in states:
                if s.status in ("running", "cancelling"):
                    child = self._children.get(s.name)
                    if child is not None:
                        if child.poll() is not None:
                            self._finish(s)
                    elif not _alive(s.pid, self.run_dir(s.name)):
                        self._finish(s)
            states = self.list()
            running = sum(s.status in ("running", "cancelling") for s in states)
            for s in states:
                if running >= self.max_running:
                    break
                if s.status == "queued":
                    self._start(s)
                    running += 1
            states = self.list()
        if watch and any(s.status in ACTIVE for s in states):
            self._ensure_watcher()
        return states

    def queue_position(self, name: str) -> int | None:
        """1 for the queued run that starts next, 2 for the one after it, ...; None when not queued."""
        queued = [s.name for s in self.list() if s.status == "queued"]
        return queued.index(name) + 1 if name in queued else None

    def _start(self, s: RunState) -> None:
        run_dir = self.run_dir(s.name)
        (run_dir / "exit_code").unlink(missing_ok=True)
        cmd = s.command(run_dir, self.python, self.module)
        # The wrapper forwards signals and records the exit code even if this app is gone by then.
        wrapper = [self.python, "-m", "studio.app.jobs", "wrap", str(run_dir / "exit_code"), "--", *cmd]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        log = open(run_dir / "train.log", "ab")
        log.write(f"\n$ {shlex.join(cmd)}\n".encode())
        log.flush()
        child = subprocess.Popen(wrapper, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        self._children[s.name] = child
        s.status, s.pid, s.started, s.attempts = "running", child.pid, time.time(), s.attempts + 1
        self._write(s)

    # ---------------------------------------------------------------- reading a run
    def metrics(self, name: str, last: int | None = None) -> list[dict]:
        path = self.run_dir(name) / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line being written right now
        return rows[-last:] if last else rows

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.run_dir(name) / "train.log"
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode(errors="replace")
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def checkpoints(self, name: str) -> list[Path]:
        """LoRA files a run has written (newest last), loadable into the studio's tuned slot."""
        run_dir = self.run_dir(name)
        return sorted(run_dir.glob("**/pytorch_lora_weights.safetensors"), key=lambda p: p.stat().st_mtime)


def _wrap(exit_code_file: str, cmd: list[str]) -> int:
    """Run the trainer, pass SIGINT/SIGTERM on to it, and note its exit code in a file."""
    child = subprocess.Popen(cmd)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: child.send_signal(signum))
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    Path(exit_code_file).write_text(f"{code}\n")
    return code


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "wrap" and sys.argv[3] == "--":
        sys.exit(_wrap(sys.argv[2], sys.argv[4:]))
    sys.exit("usage: python -m studio.app.jobs wrap EXIT_CODE_FILE -- COMMAND...")
