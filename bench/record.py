"""The one format of the benchmarks' results files, written incrementally.

Every benchmark writes one JSON file through a Record: before its first row (everything it plans
to measure listed under `not_reached`) and again after each row, so that a benchmark stopped
half-way, by a time limit or a signal, leaves what it measured and says what it did not. The
keys every file shares:

    bench         which benchmark (paper, throughput, kernels, data, e2e, prepare_archives)
    environment   what it ran on (bench/env.py: date, commit, torch, CPU, GPU, DALI)
    targets       the figures it is read against, by name (bench/targets.py), where it has any
    met           for each target this file measured, whether it was met
    rows          its measurements, one per thing measured
    not_reached   what it had still to measure when the file was written ([] when complete)

plus what each benchmark adds of its own. Files written before this format named the same things
otherwise (benchmark, env, target, targets_met, results): `normalise` reads them as this format.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from bench.env import environment, write_result

# Older names of the shared keys.
_OLD_NAMES = {"benchmark": "bench", "env": "environment", "target": "targets", "targets_met": "met",
              "results": "rows"}


class Record:
    """`Record(path, bench, planned=[keys], targets={...}, **fields)` writes the file at once;
    `put(key, row)` adds (or replaces) the row measured for `key` and marks it reached; `update(**fields)`
    sets fields; `write()` rewrites the file (atomically: a stop mid-write keeps the previous one).
    `derive(record) -> dict`, if given, adds the fields computed from the rows (a summary, which
    targets were met) at every write. Without a path nothing is written."""

    def __init__(self, path: str | Path | None, bench: str, *, planned: list[str] = (), targets: dict | None = None,
                 env: dict | None = None, derive: Callable[[dict], dict] | None = None, **fields):
        self.path = Path(path) if path is not None else None
        self.derive = derive
        self._rows: dict[str, dict] = {}
        self.data = {"bench": bench, "environment": env or environment(), **fields,
                     **({"targets": targets} if targets is not None else {}), "rows": [],
                     "not_reached": list(planned)}
        self.write()

    def __getitem__(self, key):
        return self.data[key]

    def row(self, key: str) -> dict:
        return self._rows[key]

    def put(self, key: str, row: dict, done: bool = True) -> None:
        """The row for `key` (a partial one, not yet reached, with done=False); not written until write()."""
        self._rows[key] = row
        self.data["rows"] = list(self._rows.values())
        if done and key in self.data["not_reached"]:
            self.data["not_reached"].remove(key)

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        if self.derive is not None:
            self.data.update(self.derive(self.data))
        if self.path is not None:
            write_result(self.data, self.path)


def normalise(data: dict) -> dict:
    """A results file of any age read as this format: the shared keys under their names."""
    out = {}
    for key, value in data.items():
        out[_OLD_NAMES.get(key, key)] = value
    out.setdefault("not_reached", [])
    # Files from before the shared keys that named what they ran on at their top level.
    out.setdefault("environment", {k: data[k] for k in ("date", "commit", "torch", "cpu", "threads", "gpu", "dali")
                                   if k in data})
    return out


def read(path: str | Path) -> dict:
    return normalise(json.loads(Path(path).read_text()))
