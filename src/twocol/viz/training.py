"""The loss and error curves of a run, per epoch, as a PNG (curves.png in the run directory)."""
from __future__ import annotations

from pathlib import Path

from ..monitor import read_metrics
from .plot import pyplot, save


def plot_run(metrics: Path, out: Path) -> Path:
    # Rows as read_metrics gives them (a torn last line left out); one without its numbers is skipped.
    epochs = [r for r in read_metrics(metrics) if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int)]
    x = [r["epoch"] for r in epochs]
    plt = pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(x, [r.get("train_loss") if isinstance(r.get("train_loss"), float) else None for r in epochs],
                 marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in [("train_top1_error", "train top-1"), ("val_top1_error", "val top-1"),
                       ("val_top5_error", "val top-5")]:
        ax_err.plot(x, [100 * r[key] if isinstance(r.get(key), float) else None for r in epochs], marker="o", label=label)
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    ax_err.legend()
    fig.tight_layout()
    return save(fig, out)
