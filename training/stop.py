"""Stopping a run at a safe point: SIGINT or SIGTERM (Ctrl-C, Cancel in the studio) asks, the loop
checkpoints and leaves; a second signal aborts, never in the middle of a checkpoint."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class StopFlag:
    """SIGINT or SIGTERM (Ctrl-C, or Cancel in the studio): stop at the next safe point and save a
    checkpoint. Safe points are between rollout rounds and while waiting for rewards (the epoch is
    dropped and the state it started from is saved, so --resume repeats it) and the end of the
    epoch's update. A second signal aborts at once (the last checkpoint stays), but never while a
    checkpoint is being written: then it aborts right after."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool):
        self.requested = False
        self.announce = announce
        self._previous: dict = {}
        self._saving = 0
        self._abort_after_save = False

    def _say(self, text: str) -> None:
        if self.announce:
            print(text, file=sys.stderr, flush=True)

    def _handler(self, signum, frame):
        if not self.requested:
            self.requested = True
            self._say("\nstopping: saving a checkpoint at the next safe point (the current epoch's rollouts are "
                      "dropped, or its update is finished); signal again to abort without saving")
        elif self._saving:
            self._abort_after_save = True
            self._say("\nabort requested: a checkpoint is being written; stopping right after it")
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self):
        """Around checkpoint writes: a second signal waits until the files are in place."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1
        if not self._saving and self._abort_after_save:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            if previous is not None:
                signal.signal(sig, previous)
        self._previous = {}
        return False

