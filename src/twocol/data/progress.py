"""A one-line progress report on stderr for long work (prepare, synth, bench)."""
from __future__ import annotations

import sys
import time


class Progress:
    """`Progress("train", total)`; `.update(done)`; `.close()`. On a terminal the line is
    redrawn in place; elsewhere (logs, CI) a line is printed at most every `every` seconds so
    that a log does not fill with thousands of updates."""

    def __init__(self, label: str, total: int, stream=None, every: float | None = None):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if every is not None else (0.2 if self.tty else 10.0)
        self.start = self.last = time.perf_counter()
        self.done = 0

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) {rate:.0f}/s {elapsed:.0f} s"

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(("\r" + self._line() + "\x1b[K") if self.tty else self._line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.stream.write(("\r" + self._line() + "\x1b[K\n") if self.tty else self._line() + "\n")
        self.stream.flush()
