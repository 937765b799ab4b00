"""The latest benchmark results as one report: bench/results/latest.md and latest.png.

    python -m bench.report [--results bench/results] [--out FILE.md]

Reads the newest results of each kind (find.py), puts each next to the paper's figure or the
target it is read against: the paper's comparisons (paper.py) and the speed benchmarks
(speed.py), and draws the chart (chart.py).
"""
from __future__ import annotations

from pathlib import Path

from bench.report import paper, speed
from bench.report.chart import chart
from bench.report.find import latest, paper_results
from twocol.atomic import atomic_write

SPEED = (("throughput", speed.throughput_section), ("kernels", speed.kernels_section), ("data", speed.data_section),
         ("e2e", speed.e2e_section), ("profile", speed.profile_section))


def markdown(found: dict) -> str:
    papers = paper_results(found)
    shown = papers + [v for key, v in found.items() if key.split("-")[0] in dict(SPEED)]
    lines = ["# Benchmarks: latest results", "",
             "Written by `python -m bench.report` from " + ", ".join(f"`{v['_file']}`" for v in shown)
             + " (`make bench` reruns everything).", ""]
    if papers:
        for r in papers:
            lines += paper.section(r)
    else:
        lines += ["## The paper's comparisons", "", "No results yet: run `make bench`.", ""]
    for kind, section in SPEED:
        lines += [line for key, v in found.items() if key.split("-")[0] == kind for line in section(v)]
    lines += ["Chart: [latest.png](latest.png).", ""]
    return "\n".join(lines)


def write_report(results: Path, out: Path | None = None) -> tuple[Path, dict] | None:
    """Write the report of the results under `results` (to results/latest.md and .png unless
    `out`); None when there are none."""
    found = latest(Path(results))
    if not found:
        return None
    md = out or Path(results) / "latest.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(md, markdown(found))
    chart(found, paper_results(found), md.with_suffix(".png"))
    return md, found
