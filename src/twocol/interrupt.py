"""Ctrl-C and SIGTERM during training: turned into a flag that the loop checks between steps,
so that the checkpoint is written at a clean point instead of the process dying mid-update.

A second signal stops at once (`Stopped`, a KeyboardInterrupt), except while a checkpoint is
being written (`shielded()`): a save always finishes, so that a checkpoint is never abandoned
half-way in a state that torch.save cannot unwind cleanly. The process exits with 128 + the
signal's number (130 for SIGINT, 143 for SIGTERM).
"""
from __future__ import annotations

import contextlib
import signal

_shield = 0  # depth of the sections that a signal must not break


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the loop stopped at a step boundary."""

    def __init__(self, signum: int | None = None):
        super().__init__(signum)
        self.signum = signum if signum is not None else signal.SIGINT


class Stopped(KeyboardInterrupt):
    """A second signal: stop now."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_code(signum: int) -> int:
    return 128 + int(signum)


@contextlib.contextmanager
def shielded():
    """A section (a checkpoint save) that a second signal does not break: the signal is noted
    and the section finishes."""
    global _shield
    _shield += 1
    try:
        yield
    finally:
        _shield -= 1


class StopFlag:
    """`with StopFlag() as stop:` ... `if stop.signal is not None: ...`. A second signal while
    the first is being handled stops at once (Stopped), outside a shielded section."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        if self.signal is not None and not _shield:
            raise Stopped(signum)
        if self.signal is None:
            self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False
