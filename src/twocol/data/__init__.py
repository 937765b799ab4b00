"""The data path: `prepare` (ImageNet -> stored squares, mean image, PCA), the built-in
synthetic set, and loaders (DALI, or torch + Pillow) that feed column A's device."""
from .layout import Dataset, open_dataset
from .loader import Loader, make_loader
from .synth import ensure_synthetic, synthesize

__all__ = ["Dataset", "Loader", "ensure_synthetic", "make_loader", "open_dataset", "synthesize"]
