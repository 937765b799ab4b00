"""The statistics the bench reports: means with 95% t intervals, paired by seed."""
from __future__ import annotations

import math
import statistics

# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: the nearest below).
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
       11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 20: 2.09, 30: 2.04}


def mean_ci(values: list[float]) -> list[float | None]:
    """[mean, half-width of the 95% t interval]; the half-width is None with one value."""
    m = statistics.mean(values)
    n = len(values)
    if n < 2:
        return [m, None]
    t = T95.get(n - 1) or T95[max(k for k in T95 if k <= n - 1)]
    return [m, t * statistics.stdev(values) / math.sqrt(n)]


def paired(a: list[dict], b: list[dict], key: str) -> list[float | None]:
    """mean_ci of b - a over the seeds both have."""
    by_seed = {r["seed"]: r[key] for r in a}
    return mean_ci([r[key] - by_seed[r["seed"]] for r in b if r["seed"] in by_seed])


def resolved(ci: list[float | None]) -> bool:
    """Whether an interval excludes 0."""
    m, h = ci
    return h is not None and abs(m) > h
