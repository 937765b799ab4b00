"""`twocol viz curve`: each column's colour specialisation against the epoch, from a run's
metrics.jsonl, to watch the columns specialise (or not) over training."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from .colour import LOG_KEY


def read_scores(metrics: str | Path) -> list[tuple[float, dict]]:
    """(epoch, column_scores) from every line of a JSON-lines log that carries LOG_KEY,
    in epoch order; a resumed run may log an epoch twice, and the later line wins."""
    path = Path(metrics)
    if not path.is_file():
        raise DataError(f"metrics file not found: {path}")
    by_epoch = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{path}:{n} is not a JSON line") from None
        if isinstance(row, dict) and isinstance(row.get(LOG_KEY), dict) and "epoch" in row:
            by_epoch[row["epoch"]] = row[LOG_KEY]
    if not by_epoch:
        raise DataError(f"{path} has no line with an epoch and '{LOG_KEY}' scores "
                        "(logged by a trainer that calls twocol.viz.column_scores)")
    return sorted(by_epoch.items())


def draw_curve(scores: list[tuple[float, dict]], path, title: str) -> None:
    """Mean per column as a line, the spread over its kernels (± one std) as a band."""
    from .plot import pyplot, save

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


def add_arguments(p) -> None:
    p.add_argument("--metrics", required=True, metavar="RUN/metrics.jsonl", help="a training run's metrics log")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png", help="where to write the figure")


def run(args) -> int:
    scores = read_scores(args.metrics)
    draw_curve(scores, args.out, f"colour specialisation of conv1, {Path(args.metrics).parent.name}")
    for epoch, s in scores:
        print(f"epoch {epoch}: " + ", ".join(f"column {c} {v['mean']:.4f} ± {v['std']:.4f}" for c, v in sorted(s.items())))
    print(f"wrote {args.out}")
    return 0
