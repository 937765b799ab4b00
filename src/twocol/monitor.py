"""What long work shows and records: a progress line for people, JSON lines for programs.

`Progress` is the one progress display of the project (training, prepare, synth, benchmarks):
on a terminal a bar redrawn in place, elsewhere (a log file, CI) plain lines, at most one every
`every` seconds. `MetricsLog` appends a run's metrics to metrics.jsonl, one JSON object per
line; `read_metrics` reads such a file back, tolerating the torn last line that a crash in the
middle of an append leaves.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .atomic import atomic_write
from .errors import DataError

BAR = 20


def duration(seconds: float) -> str:
    """A time left or taken, for people: '42 s', '7 min 05 s', '3 h 07 min', '2 d 05 h'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


class Progress:
    """`Progress(label, total)`, then `.update(done)` (or `.update(done, text)`) and `.close()`;
    `.line(text)` prints a line that stays. Without `text` a line reads
    'label: done/total (pct%) rate/s elapsed s, time left'. `done`: work finished before this
    process started (a resumed run): shown in the count, not in the rate."""

    def __init__(self, label: str, total: int, stream=None, every: float | None = None, enabled: bool = True,
                 done: int = 0):
        self.label, self.total = label, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every = every if every is not None else (0.2 if self.tty else 10.0)
        self.enabled = enabled  # under torchrun only rank 0 speaks
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.before = self.done = done
        self.text = None

    def _status(self) -> str:
        if self.text is not None:
            return self.text
        elapsed = time.perf_counter() - self.start
        rate = (self.done - self.before) / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = f", {duration((self.total - self.done) / rate)} left" if 0 < rate and self.done < self.total else ""
        return f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) {rate:.0f}/s {elapsed:.0f} s{left}"

    def _write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text)
            self.stream.flush()

    def update(self, done: int, text: str | None = None) -> None:
        """`done` items so far; past the total (a stream holding more than it announced), the
        total becomes `done`."""
        self.done, self.text = done, text
        self.total = max(self.total, done)
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            filled = int(BAR * min(1.0, done / self.total)) if self.total else BAR
            self._write(f"\r\033[K[{'#' * filled}{'.' * (BAR - filled)}] {self._status()}")
        else:
            self._write(self._status() + "\n")

    def found_done(self, n: int) -> None:
        """`n` more items turn out to have been done before this process started (a resumed
        run that meets them as it goes): shown in the count, not in the rate."""
        self.before += n
        self.update(self.done + n)

    def line(self, text: str) -> None:
        self._write(("\r\033[K" if self.tty else "") + text + "\n")

    def close(self) -> None:
        self.line(self._status())


def waited(items):
    """Each item of `items` with the seconds its `next()` blocked: (item, seconds). For a
    loader, the time the step waited for its batch."""
    items = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(items)
        except StopIteration:
            return
        yield item, time.perf_counter() - start


class MetricsLog:
    """Appends rows to a JSON-lines file (metrics.jsonl of a run)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def start(self) -> None:
        """A new run: rows left by an earlier one that never wrote a checkpoint are dropped."""
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def keep_until(self, step: int, epoch: int, last_epoch: dict | None = None) -> None:
        """A run resumed from the checkpoint at (step, epoch): drop the rows logged after it
        (work the checkpoint lacks, which the run repeats), torn or corrupt lines, and add the
        checkpoint's own epoch row (`last_epoch`) if a crash kept it out of the log."""
        if not self.enabled:
            return
        try:
            lines = self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and self._within(row, step, epoch):
                rows.append(row)
        if last_epoch and last_epoch.get("kind") == "epoch" and last_epoch.get("epoch") == epoch and not any(
                r.get("kind") == "epoch" and r.get("epoch") == epoch for r in rows):
            rows.append(last_epoch)
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    @staticmethod
    def _within(row: dict, step: int, epoch: int) -> bool:
        if row.get("kind") == "epoch":
            return isinstance(row.get("epoch"), int) and row["epoch"] <= epoch
        if row.get("kind") == "step":
            return isinstance(row.get("step"), int) and row["step"] <= step
        return True

    def record(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    """Every row of a metrics.jsonl. A torn last line (a crash mid-append) is left out; a
    corrupt line anywhere else is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metrics file not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise DataError(f"{path}:{n} is not a JSON line") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows
