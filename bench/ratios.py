"""The ratios the throughput targets (bench/targets.py) are read against, computed from a results
file's rows (bench/throughput.py writes them; the report reads them, old files too)."""
from __future__ import annotations

from bench.targets import THROUGHPUT, THROUGHPUT_UPPER
BASELINE = ("twocol, column streams", "twocol")  # the plain two-column net: CUDA, CPU
GRAPH = " + CUDA graph"  # a variant's name with its step captured and replayed


def throughput_summary(results: list[dict], amps: list[str]) -> dict:
    """Per precision: two-column / grouped step time, column streams / one stream, two-column /
    torchvision images/s (each eager against eager and, with the _graphed suffix, CUDA graph
    against CUDA graph), bf16 / fp32 step time, and each lever's step time over the plain net."""
    summary = {}
    fp32 = {r["variant"]: r["median_step_s"] for r in results if r["amp"] == "off" and "median_step_s" in r}
    for amp in amps:
        by = {r["variant"]: r["median_step_s"] for r in results if r["amp"] == amp and "median_step_s" in r}
        base = next((by[b] for b in BASELINE if b in by), None)
        if base is None:
            continue
        s = {}
        for suffix, tail in (("", ""), ("_graphed", GRAPH)):
            two = next((by[b + tail] for b in BASELINE if b + tail in by), None)
            if two is None:
                continue
            if "grouped" + tail in by:
                s["twocol_over_grouped" + suffix] = two / by["grouped" + tail]
            if "torchvision alexnet" + tail in by:
                s["twocol_over_torchvision_images_per_s" + suffix] = by["torchvision alexnet" + tail] / two
        if "twocol, one stream" in by:
            s["overlapped_over_serialised"] = base / by["twocol, one stream"]
        fp32_base = next((fp32[b] for b in BASELINE if b in fp32), None)
        if amp == "bf16" and fp32_base:
            s["bf16_over_fp32_step"] = base / fp32_base
        s["levers_over_plain"] = {name: t / base for name, t in by.items() if name.startswith("twocol") and " + " in name}
        summary[amp] = s
    return summary


def throughput_met(summary: dict) -> dict:
    """Per precision and target: whether the ratio measured meets it (targets not measured absent)."""
    met = {}
    for amp, s in summary.items():
        for name, goal in THROUGHPUT.items():
            if name in s:
                met[f"{amp}: {name}"] = s[name] <= goal if name in THROUGHPUT_UPPER else s[name] >= goal
    return met
