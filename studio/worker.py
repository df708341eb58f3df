"""A child process that runs heavy requests for the server, one at a time, with hard limits.

Why a process: a thread cannot be stopped, so a time limit on in-process work can only abandon
it; a process is killed. It is spawned (a fresh interpreter that shares no threads or locks with
the server), its memory goes back to the system when it is replaced, and the server's own memory
stays small whatever one request needs.

`Worker.call(fn, *args, timeout_s=...)` pickles a module-level function and its arguments to the
child and waits; past the time limit or the memory limit the child is killed (the next call
starts a fresh one) and RequestTimeout / WorkerMemoryError is raised. An exception in the child
is raised again in the caller with the child's traceback attached as a note.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import threading
import time
import traceback

from studio.errors import RequestTimeout, UserError

log = logging.getLogger("studio.worker")


class WorkerMemoryError(UserError):
    """The request needed more memory than the worker may use; the worker was stopped."""


def _child(conn) -> None:
    # One BLAS thread: the analysis runs small matrices, and there is nobody to share a pool with.
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
            tb = traceback.format_exc()
            try:
                pickle.dumps(e)
                reply = ("error", e, tb)
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                reply = ("error", RuntimeError(f"{type(e).__name__}: {e}"), tb)
        conn.send(reply)
        del reply
        _release_free_memory()


def _release_free_memory() -> None:
    """Hand freed heap pages back to the system between requests (glibc keeps them otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc); 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Worker:
    """One spawned child process, reused across calls, replaced after a failure or `max_calls`."""

    def __init__(self, name: str, max_rss_bytes: int | None = None, max_calls: int = 200):
        self.name, self.max_rss_bytes, self.max_calls = name, max_rss_bytes, max_calls
        self._proc = None
        self._conn = None
        self._calls = 0
        self._lock = threading.Lock()
        self.peak_rss_bytes = 0  # the child's largest resident memory seen while waiting

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # a spawned child reads its environment at start
        try:
            self._proc = ctx.Process(target=_child, args=(child,), name=f"studio-{self.name}", daemon=True)
            self._proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self._conn, self._calls = parent, 0
        log.info("%s worker started (pid %s)", self.name, self._proc.pid)

    def stop(self) -> None:
        """Kill the child (if any); the next call starts a fresh one."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)

    def call(self, fn, *args, timeout_s: float, **kwargs):
        """fn(*args, **kwargs) in the child; its result, or its exception raised here."""
        deadline = time.monotonic() + timeout_s
        if not self._lock.acquire(timeout=timeout_s):
            raise RequestTimeout(f"the {self.name} waited {timeout_s:g} s for an earlier one to finish",
                                 fix="Try again in a minute")
        try:
            if self._proc is None or not self._proc.is_alive() or self._calls >= self.max_calls:
                if self._proc is not None:
                    log.info("%s worker %s replaced (alive: %s, calls: %d)", self.name, self._proc.pid,
                             self._proc.is_alive(), self._calls)
                self.stop()
                self._start()
            self._calls += 1
            self._conn.send((fn, args, kwargs))
            while not self._conn.poll(min(0.25, max(0.0, deadline - time.monotonic()))):
                rss = rss_bytes(self._proc.pid)
                self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
                if self.max_rss_bytes and rss > self.max_rss_bytes:
                    self.stop()
                    raise WorkerMemoryError(f"the {self.name} needed more than {self.max_rss_bytes / 2**30:.1f} GiB "
                                            "and was stopped", fix="Try a shorter or smaller clip")
                if time.monotonic() >= deadline:
                    self.stop()
                    raise RequestTimeout(f"the {self.name} took longer than {timeout_s:g} s and was stopped",
                                         fix="Try a shorter or smaller clip, or try again when the studio is less busy")
                if not self._proc.is_alive():
                    break
            try:
                reply = self._conn.recv()
            except (EOFError, OSError):
                code = self._proc.exitcode if self._proc is not None else None
                self.stop()
                raise RuntimeError(f"the {self.name} process ended unexpectedly (exit code {code})") from None
            if reply[0] == "ok":
                return reply[1]
            _, error, tb = reply
            error.add_note(f"in the {self.name} worker process:\n{tb}")
            raise error
        finally:
            self._lock.release()
