"""`twocol viz filters`: the conv1 kernels of each column as a grid, like the paper's
Figure 3 (there, 48 kernels of 11x11x3 per GPU, GPU 1's three rows above GPU 2's)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..metrics import column_scores
from .plot import pyplot, save

PER_ROW = 16  # the paper's Figure 3 shows each column's 48 kernels as 3 rows of 16
SCALE = 4
GAP = 1
BACKGROUND = 255
MIN_WIDTH_PX = 480  # room for a block's title when a column has few kernels


@dataclass(frozen=True)
class GridLayout:
    tiles: int
    rows: int
    cols: int
    tile: int  # side of one upscaled kernel, pixels
    gap: int

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left pixel (row, col) of tile i (row-major)."""
        r, c = divmod(i, self.cols)
        return self.gap + r * (self.tile + self.gap), self.gap + c * (self.tile + self.gap)

    @property
    def shape(self) -> tuple[int, int]:
        step = self.tile + self.gap
        return self.gap + self.rows * step, self.gap + self.cols * step


def stretch(weight: torch.Tensor) -> np.ndarray:
    """(K, 3, h, w) -> (K, h, w, 3) in [0, 1], each kernel mapped from its own min..max.
    The min and max are taken over all three channels together: stretching the channels
    separately would change a kernel's colour and make a colour kernel look grey or back."""
    w = weight.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    flat = span == 0  # a constant kernel has no contrast to stretch: show it mid-grey
    return np.where(flat, 0.5, (w - lo) / np.where(flat, 1.0, span))


def filter_grid(weight: torch.Tensor, per_row: int = PER_ROW, scale: int = SCALE,
                gap: int = GAP) -> tuple[np.ndarray, GridLayout]:
    """One column's kernels as an RGB uint8 image: tiles upscaled `scale` times (nearest
    neighbour, so every weight stays a visible square), row-major, `gap` pixels apart."""
    k, _, h, w = weight.shape
    if h != w:
        raise ValueError(f"conv1 kernels are square in every twocol config, got {h}x{w}")
    cols = min(k, per_row)
    layout = GridLayout(tiles=k, rows=-(-k // cols), cols=cols, tile=h * scale, gap=gap)
    grid = np.full((*layout.shape, 3), BACKGROUND, np.uint8)
    tiles = np.round(stretch(weight) * 255).astype(np.uint8)
    for i, tile in enumerate(tiles):
        y, x = layout.origin(i)
        grid[y:y + layout.tile, x:x + layout.tile] = tile.repeat(scale, 0).repeat(scale, 1)
    return grid, layout


def column_label(name: str) -> str:
    # Column A lives on the first device of --gpus, B on the second (twocol.devices).
    return f"column {name} ({'first' if name == 'A' else 'second'} device of --gpus)"


def draw_filters(net, path, title: str) -> dict:
    """Save the figure: one block per column, titled with its colour-specialisation score.
    Returns column_scores(net)."""
    plt = pyplot()
    scores = column_scores(net)
    grids = [(name, *filter_grid(col.conv1.weight)) for name, col in net.columns()]
    dpi, title_px = 100, 26
    width = max(MIN_WIDTH_PX, *(g.shape[1] for _, g, _ in grids))
    height = title_px + sum(title_px + g.shape[0] for _, g, _ in grids)
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.suptitle(title, fontsize=9, y=1 - 4 / height, va="top")
    top = height - title_px  # pixels from the bottom; blocks go downwards below the title
    for name, grid, layout in grids:
        gh, gw = grid.shape[:2]
        top -= title_px + gh
        # One image pixel per figure pixel, so the upscaled kernels stay crisp squares.
        ax = fig.add_axes([0, top / height, gw / width, gh / height])
        ax.imshow(grid, interpolation="nearest")
        ax.set_axis_off()
        s = scores[name]
        ax.set_title(f"{column_label(name)}: {layout.tiles} kernels, colour specialisation "
                     f"{s['mean']:.3f} ± {s['std']:.3f}", fontsize=8)
    save(fig, path)
    return scores
