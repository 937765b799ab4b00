"""Which results the report shows: the newest file of each kind under a results folder, read in
the one record format (bench/record.py), whatever its age.

Files: <date>-paper-<protocol>-v<version>[-seeds<N>].json (bench.paper; older ones
<date>-paper[-subset].json, before protocol files), <date>-throughput-*.json, -kernels-*,
-data-*, -e2e-*, -profile-* (one per device), and the GPU runs' folders <date>-gpu-<card>[-part]/
(throughput.json, kernels.json, e2e.json, profile-<amp>.json, as bench/gpu_check.sh writes them).
"""
from __future__ import annotations

import re
from pathlib import Path

from bench.record import read

NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(paper|throughput|kernels|data|e2e|profile)(-[\w.-]+)?\.json$")
GPU_RUN = re.compile(r"^(\d{4}-\d{2}-\d{2})-gpu-([\w.-]+)$")
GPU_FILES = re.compile(r"^(throughput|throughput-compile|kernels|e2e|e2e-dali|profile-[\w.-]+)\.json$")


def files(results: Path) -> list[tuple[str, str, Path]]:
    """(date, key, path) of every results file: key is the kind and what follows it in the name
    ('paper-cpu-v1', 'throughput-cpu', 'kernels-gpu-h200')."""
    found = []
    for path in results.glob("*.json"):
        m = NAME.match(path.name)
        if m:
            found.append((m.group(1), m.group(2) + (m.group(3) or ""), path))
    for folder in results.iterdir():
        run = GPU_RUN.match(folder.name)
        if run and folder.is_dir():
            for path in folder.glob("*.json"):
                m = GPU_FILES.match(path.name)
                if m:
                    found.append((run.group(1), f"{m.group(1)}-gpu-{run.group(2)}", path))
    return found


def latest(results: Path) -> dict[str, dict]:
    """key -> the newest such file's contents (with its path under `results` as "_file")."""
    newest: dict[str, tuple[str, float, Path]] = {}
    for date, key, path in files(results):
        rank = (date, path.stat().st_mtime, path)
        if key not in newest or rank[:2] > newest[key][:2]:
            newest[key] = rank
    found = {}
    for key, (_, _, path) in sorted(newest.items()):
        found[key] = read(path)
        found[key]["_file"] = str(path.relative_to(results))
    return found


def paper_results(found: dict[str, dict]) -> list[dict]:
    """The paper's comparisons to show: for each protocol, its highest version's full run (its
    quick look, fewer seeds, only while the full one is missing); results from before protocol
    files only where no protocol has any."""
    best: dict[str, dict] = {}
    for key, r in found.items():
        p = r.get("protocol") if key.startswith("paper") else None
        if not isinstance(p, dict):
            continue
        rank = (p["version"], not p.get("quick_look"), p["seeds"])
        if p["name"] not in best or rank > best[p["name"]][0]:
            best[p["name"]] = (rank, r)
    if best:
        return [r for _, r in sorted(best.values(), key=lambda x: x[1]["protocol"]["name"])]
    return [r for key, r in found.items() if key in ("paper", "paper-subset")]
