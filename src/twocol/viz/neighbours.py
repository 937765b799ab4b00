"""`twocol viz neighbours`: for query images, the nearest training images by euclidean
distance in the last hidden layer, next to the nearest by raw pixels (the paper's Figure 4:
images close in the 4096-d feature space are often far apart as pixels).

Pixel distances are taken between the centre crops the net sees (the crop side is stored in
the features file), read from the dataset's files; subtracting the mean image would not
change them, so raw pixels it is."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from ..errors import DataError
from ..features import load_features
from .plot import pyplot, save

CHUNK = 1024  # bank rows per distance computation: bounds memory for any split size


def nearest(queries: np.ndarray, chunks: Iterable[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest bank rows of each query by euclidean distance, the bank given as
    consecutive chunks of rows (so a split that does not fit in memory can be searched).

    Returns (indices, distances), both Q x k, nearest first; ties go to the lower index.
    Differences are taken directly in float64 (not as |q|^2 - 2q.b + |b|^2), so a row
    identical to the query is at distance exactly 0."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    best_d = np.empty((len(q), 0))
    best_i = np.empty((len(q), 0), np.int64)
    offset = 0
    for chunk in chunks:
        c = np.asarray(chunk, np.float64).reshape(len(chunk), -1)
        if c.shape[1] != q.shape[1]:
            raise DataError(f"bank rows have {c.shape[1]} values, queries {q.shape[1]}")
        d = np.stack([((c - row) ** 2).sum(1) for row in q])
        i = np.broadcast_to(np.arange(offset, offset + len(c)), d.shape)
        all_d, all_i = np.concatenate([best_d, d], 1), np.concatenate([best_i, i], 1)
        # Stable, and the kept rows come first with lower indices: ties keep the lower index.
        order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
        offset += len(c)
    return best_i, np.sqrt(best_d)


def row_chunks(rows: np.ndarray, size: int = CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def load_crop(root: str | Path, relpath: str, crop: int) -> np.ndarray:
    """The centre crop x crop patch of a dataset image, RGB uint8 (crop, crop, 3)."""
    path = Path(root) / relpath
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path} ({e})") from None
    w, h = im.size
    if min(w, h) < crop:
        raise DataError(f"image {path} is {w}x{h}, smaller than the {crop}x{crop} crop")
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(im.crop((left, top, left + crop, top + crop)))


def pixel_chunks(root, relpaths: list[str], crop: int, size: int = CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, len(relpaths), size):
        yield np.stack([load_crop(root, p, crop) for p in relpaths[start:start + size]])


def same_images(a: dict, b: dict) -> bool:
    return a["root"] == b["root"] and a["split"] == b["split"] and a["relpaths"] == b["relpaths"]


def check_bank(query_meta: dict, bank_meta: dict, query_rows, bank_rows) -> None:
    """Distances mean something only between features of the same net and crop."""
    if bank_meta["split"] != "train":
        raise DataError(f"--train-feats holds the {bank_meta['split']} split; neighbours are "
                        "searched among training images")
    for key in ("checkpoint", "epoch", "step", "crop"):
        if query_meta.get(key) != bank_meta.get(key):
            raise DataError(f"the query features and the training features differ in {key} "
                            f"({query_meta.get(key)!r} vs {bank_meta.get(key)!r}): make both "
                            "with the same checkpoint")
    if query_rows.shape[1] != bank_rows.shape[1]:
        raise DataError(f"feature widths differ: {query_rows.shape[1]} vs {bank_rows.shape[1]}")


def search(query_rows, query_meta, bank_rows, bank_meta, queries: list[int], k: int) -> dict:
    """Feature and pixel neighbours of each query row: {"features"|"pixels": (idx, dist)}.
    When the queries are themselves bank images, each query's own row is left out (it is
    trivially its own nearest neighbour, at distance 0)."""
    skip_self = same_images(query_meta, bank_meta)
    extra = 1 if skip_self else 0
    crop = query_meta["crop"]
    q_pixels = np.stack([load_crop(query_meta["root"], query_meta["relpaths"][n], crop) for n in queries])
    found = {
        "features": nearest(query_rows[queries], row_chunks(bank_rows), k + extra),
        "pixels": nearest(q_pixels, pixel_chunks(bank_meta["root"], bank_meta["relpaths"], crop), k + extra),
    }
    out = {}
    for space, (idx, dist) in found.items():
        keep = [[j for j in range(idx.shape[1]) if not (skip_self and idx[r, j] == n)][:k]
                for r, n in enumerate(queries)]
        out[space] = (np.stack([idx[r, js] for r, js in enumerate(keep)]),
                      np.stack([dist[r, js] for r, js in enumerate(keep)]))
    return out


SPACES = (("features", "nearest by last hidden layer"), ("pixels", "nearest by raw pixels"))


def draw_neighbours(path, queries: list[int], query_meta: dict, bank_meta: dict, found: dict) -> None:
    """One row per query: the query, its feature neighbours, a gap, its pixel neighbours.
    A neighbour's frame is green when it has the query's class, red otherwise; its title is
    its distance."""
    plt = pyplot()
    k = found["features"][0].shape[1]
    crop = query_meta["crop"]
    ncols = 2 * k + 2
    widths = [1] * (k + 1) + [0.3] + [1] * k  # a narrow empty column between the two searches
    fig, axes = plt.subplots(len(queries), ncols, figsize=(1.1 * sum(widths), 1.3 * len(queries) + 0.5),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for r, n in enumerate(queries):
        label = query_meta["labels"][n]
        axes[r, 0].imshow(load_crop(query_meta["root"], query_meta["relpaths"][n], crop))
        axes[r, 0].set_title(f"{query_meta['split']} {n}\n{query_meta['classes'][label]}", fontsize=7)
        axes[r, k + 1].set_visible(False)
        for s, (space, _) in enumerate(SPACES):
            idx, dist = found[space]
            for j in range(k):
                ax = axes[r, 1 + j + s * (k + 1)]
                b = int(idx[r, j])
                ax.imshow(load_crop(bank_meta["root"], bank_meta["relpaths"][b], crop))
                ax.set_title(f"{dist[r, j]:.3g}", fontsize=7)
                colour = "tab:green" if bank_meta["labels"][b] == label else "tab:red"
                for spine in ax.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(2.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    for s, (_, heading) in enumerate(SPACES):
        first, last = axes[0, 1 + s * (k + 1)], axes[0, k + s * (k + 1)]
        x = (first.get_position().x0 + last.get_position().x1) / 2
        fig.text(x, 1 - 0.2 / fig.get_figheight(), heading, ha="center", va="center", fontsize=9)
    save(fig, path)


def neighbours(feats: str | Path, train_feats: str | Path | None, queries: list[int], k: int) -> tuple[dict, dict, dict]:
    """Search the training images nearest to rows `queries` of the features file `feats`, in
    the last hidden layer and in pixels. The training features are `train_feats`, or `feats`
    itself when it holds the training split. Returns (query metadata, training metadata,
    search's result)."""
    query_rows, query_meta = load_features(feats)
    if train_feats:
        bank_rows, bank_meta = load_features(train_feats)
    elif query_meta["split"] == "train":
        bank_rows, bank_meta = query_rows, query_meta
    else:
        raise DataError(f"{feats} holds the {query_meta['split']} split: give --train-feats "
                        "with the training split's features (same checkpoint) to search in")
    check_bank(query_meta, bank_meta, query_rows, bank_rows)
    bad = [n for n in queries if not 0 <= n < len(query_rows)]
    if bad:
        raise DataError(f"--query {bad[0]} is not a row of {feats} (it has {len(query_rows)} rows)")
    if k < 1:
        raise DataError(f"--k must be at least 1, got {k}")
    return query_meta, bank_meta, search(query_rows, query_meta, bank_rows, bank_meta, queries, k)
