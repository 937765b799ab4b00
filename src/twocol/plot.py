"""The loss and error curves of a run, per epoch, as a PNG."""
from __future__ import annotations

import json
from pathlib import Path


def read_epochs(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "epoch"]


def plot_run(metrics: Path, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    epochs = read_epochs(metrics)
    x = [r["epoch"] for r in epochs]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(x, [r.get("train_loss") for r in epochs], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    for key, label in [("train_top1_error", "train top-1"), ("val_top1_error", "val top-1"),
                       ("val_top5_error", "val top-5")]:
        ax_err.plot(x, [100 * r[key] if r.get(key) is not None else None for r in epochs], marker="o", label=label)
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error")
    ax_err.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
