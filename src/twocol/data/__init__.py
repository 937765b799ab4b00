"""The data path: `prepare` (ImageNet -> stored squares, mean image, PCA), the built-in
synthetic set, and loaders (DALI, or torch + Pillow) that feed column A's device.

Names are imported on first use, so that prepare's and synth's worker processes, which only
need numpy and Pillow, do not load torch."""
import importlib

_WHERE = {"Dataset": "layout", "open_dataset": "layout", "Loader": "loader", "make_loader": "loader",
          "ensure_synthetic": "synth", "synthesize": "synth"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
