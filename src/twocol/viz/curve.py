"""`twocol viz curve`: each column's colour specialisation against the epoch, from a run's
metrics.jsonl, to watch the columns specialise (or not) over training."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..metrics import COLOUR_KEY
from ..monitor import read_metrics
from .plot import pyplot, save


def read_scores(metrics: str | Path) -> list[tuple[float, dict]]:
    """(epoch, column_scores) from every row of a run's metrics.jsonl that carries them, in
    epoch order; a resumed run may log an epoch twice, and the later row wins."""
    by_epoch = {row["epoch"]: row[COLOUR_KEY] for row in read_metrics(metrics)
                if isinstance(row.get(COLOUR_KEY), dict) and "epoch" in row}
    if not by_epoch:
        raise DataError(f"{metrics} has no line with an epoch and '{COLOUR_KEY}' scores "
                        "(logged by twocol train every epoch)")
    return sorted(by_epoch.items())


def draw_curve(scores: list[tuple[float, dict]], path, title: str) -> None:
    """Mean per column as a line, the spread over its kernels (± one std) as a band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for column in sorted({c for _, s in scores for c in s}):
        pts = [(e, s[column]) for e, s in scores if column in s]
        x = [e for e, _ in pts]
        mean = [s["mean"] for _, s in pts]
        std = [s["std"] for _, s in pts]
        ax.plot(x, mean, marker="o", label=f"column {column}")
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
    # 0 = grey kernels, 2/3 = single-channel kernels, 1 = opponent-colour kernels.
    ax.axhline(2 / 3, color="grey", linestyle=":", linewidth=1, label="random kernels")
    ax.set(xlabel="epoch", ylabel="conv1 colour specialisation", title=title, ylim=(0, 1))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.tight_layout()
    save(fig, path)
