"""Ctrl-C and SIGTERM during training: turned into a flag that the loop checks between steps,
so that the checkpoint is written at a clean point instead of the process dying mid-update."""
from __future__ import annotations

import signal


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the loop stopped at a step boundary."""


class StopFlag:
    """`with StopFlag() as stop:` ... `if stop.signal is not None: ...`. A second signal while
    the first is being handled stops at once (KeyboardInterrupt)."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False
