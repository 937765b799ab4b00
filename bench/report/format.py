"""How the report writes numbers: intervals, their readings against the paper, targets, tables."""
from __future__ import annotations


def ci(pair, digits: int = 2) -> str:
    """'m +- h' for [mean, half-width]; the half-width is None with one seed."""
    m, h = pair
    return f"{m:.{digits}f}" if h is None else f"{m:.{digits}f} ± {h:.{digits}f}"


def signed_ci(pair) -> str:
    m, h = pair
    return f"{m:+.2f}" if h is None else f"{m:+.2f} ± {h:.2f}"


def reading(pair, paper: float | None, positive: str, negative: str) -> str:
    """Whether a paired interval resolves the difference and in which direction; `positive` and
    `negative` say what a difference above or below 0 means. `paper`: the paper's effect (> 0:
    its direction is `positive`), or None where it gives no size."""
    m, h = pair
    if h is None:
        return "one seed: no interval"
    if m - h <= 0 <= m + h:
        return "not resolved (the interval spans 0)"
    up = m - h > 0
    agree = "" if paper is None else (" (the paper's direction)" if up == (paper > 0) else " (opposite to the paper)")
    return f"resolved: {positive if up else negative}" + agree


def target(pair, limit: float | None) -> str:
    """'1.23 <= 2.0: met' for a half-width against its target."""
    h = pair[1]
    if limit is None:
        return "-"
    if h is None:
        return "no interval"
    return f"{h:.2f} {'<=' if h <= limit else '>'} {limit:.1f}: {'met' if h <= limit else 'NOT met'}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def commit_text(record: dict) -> str:
    """'commit abc1234', or that the record does not know its commit, and why where it says."""
    if record.get("commit"):
        return f"commit {record['commit']}"
    return f"commit unknown ({record.get('commit_missing') or 'not recorded'})"


def env_line(env: dict) -> str:
    where = env.get("gpu") or f"{env.get('cpu')}, torch threads: {env.get('threads')}"
    return f"{where}; torch {env.get('torch')}, DALI {env.get('dali')}, {commit_text(env)}, {env.get('date')}"
