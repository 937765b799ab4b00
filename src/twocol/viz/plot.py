"""matplotlib, imported only when a figure is drawn (the CLI imports every command module
to build its parser, and the scores must not need matplotlib)."""
from __future__ import annotations

from pathlib import Path

from ..errors import TwocolError


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TwocolError("figures need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path
