"""The one format of the benchmarks' results files, written incrementally.

Every benchmark writes one JSON file through a Record: written before its first row and again
after each, so that a benchmark stopped half-way leaves what it measured, with what it had not
reached yet under `not_reached`. The keys every file shares:

    bench         which benchmark (paper, throughput, kernels, data, e2e, profile)
    environment   what it ran on (bench/env.py: date, commit, torch, CPU, GPU, DALI)
    targets       the figures it is read against (bench/targets.py), where it has any
    rows          its measurements, one per configuration measured
    not_reached   what it had still to measure when the file was written ([] when complete)

plus what each benchmark adds of its own. Files written before this format used other names for
the same keys; `normalise` reads them as this format.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.env import environment
from twocol.atomic import atomic_write

# Older names of the shared keys: "benchmark" for bench, "env" for environment, "target" or
# "targets_met" beside targets.
_OLD_NAMES = {"benchmark": "bench", "env": "environment", "target": "targets"}


class Record:
    """`Record(path, bench, not_reached=[...], **fields)` writes the file at once; `add(row)`,
    `update(**fields)` and `reached(name)` each rewrite it (atomically: a stop mid-write keeps
    the previous file)."""

    def __init__(self, path: str | Path, bench: str, *, not_reached: list[str] = (), targets: dict | None = None,
                 rows: list[dict] | None = None, env: dict | None = None, **fields):
        self.path = Path(path)
        self.data = {"bench": bench, "environment": env or environment(), **fields, "rows": list(rows or []),
                     "not_reached": list(not_reached)}
        if targets is not None:
            self.data["targets"] = targets
        self.write()

    def __getitem__(self, key):
        return self.data[key]

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        self.write()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def reached(self, name: str) -> None:
        if name in self.data["not_reached"]:
            self.data["not_reached"].remove(name)
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, indent=1) + "\n")


def normalise(data: dict) -> dict:
    """A results file of any age read as this format: the shared keys under their names."""
    out = {}
    for key, value in data.items():
        new = _OLD_NAMES.get(key, key)
        if new == "targets" and isinstance(out.get("targets"), dict) and isinstance(value, dict):
            value = {**value, **out["targets"]}
        out[new] = value
    out.setdefault("not_reached", [])
    # Files from before the shared keys that named what they ran on at their top level.
    out.setdefault("environment", {k: data[k] for k in ("date", "commit", "torch", "cpu", "threads", "gpu", "dali")
                                   if k in data})
    return out


def read(path: str | Path) -> dict:
    return normalise(json.loads(Path(path).read_text()))
