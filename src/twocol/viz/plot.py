"""matplotlib, imported only when a figure is drawn: it is heavy to import, and training,
the colour scores and the command line must work without it."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write
from ..errors import TwocolError


def pyplot():
    # matplotlib is optional: imported here, when a figure is drawn, not with twocol.
    try:
        import matplotlib
    except ImportError:
        raise TwocolError("figures need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, never a window (set before pyplot is imported)
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Through atomic_write: a figure cut short by a crash never replaces a whole one.
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png"))
    pyplot().close(fig)
    return path
