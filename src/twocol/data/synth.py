"""The built-in synthetic dataset: `twocol synth DST --classes K --per-class M`.

A class is a conjunction of an object's shape, the texture on it and (past 48 classes) the
arrangement of its copies, laid out on a grid so that every shape appears with several
textures and every texture on several shapes: neither alone names the class. Everything else
is nuisance drawn per image: position, size, rotation, the two colours of the texture, a
cluttered background, distractor blobs that may occlude the object, an uneven colour-cast
illumination and sensor noise. Telling the classes apart needs local texture and global shape
together, which a CNN learns and a colour or intensity histogram does not.

Every image is drawn from its own seed (seed, split, class, index), so the set is the same
whatever the number of workers, and a rerun reproduces it bit for bit.
"""
from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np

from ..config import MAX_IMAGE_SIDE, MAX_SYNTH_PER_CLASS, Config
from ..errors import DataError
from ..lock import DirLock
from .build import Item, build, worker_count
from .layout import META, open_dataset

SHAPES = ("disk", "square", "triangle", "cross", "ring", "star", "hexagon", "crescent")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "dots", "diagonal")
ARRANGEMENTS = ("single", "pair")
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * len(ARRANGEMENTS)
QUALITY = 90
# Raised whenever render() draws different images, so a set made by an older version is not
# silently reused under the same name.
GENERATOR = 2
_SPLIT_ID = {"train": 0, "val": 1}

# Nuisance strengths, lengths in pixels of a 72-pixel image, colours in 0..255 levels. Chosen
# among four settings by how fast small_twocol learns 10 classes x 500 (val error after 10 / 20
# epochs at a fixed rate 0.01): these 62% / 14%; stronger clutter and noise 70% / 30%; milder
# ones 42% / 2%, too easy to leave room for the ablations' differences.
WAVES = 10.0          # std of the amplitude of each of three low-frequency background colour waves
BLOBS = (1, 4)        # number of distractor blobs behind the object: an integer in [lo, hi)
OCCLUDERS = (0, 2)    # ... and in front of it
RADIUS = (12.0, 20.0)
PERIOD = (5.0, 8.0)   # of the texture
CONTRAST = 180.0      # least L1 distance between the texture's two colours
NOISE = (2.0, 8.0)    # range of the sensor noise's std


def class_grid(k: int) -> list[tuple[str, str, str]]:
    """The (shape, texture, arrangement) of each of k classes: shapes x textures grid as square
    as the counts allow, e.g. 10 classes = 5 shapes x 2 textures."""
    if not 2 <= k <= MAX_CLASSES:
        raise DataError(f"the synthetic set has 2 to {MAX_CLASSES} classes, not {k}")
    ns = min(len(SHAPES), math.ceil(math.sqrt(2 * k)))
    nt = min(len(TEXTURES), math.ceil(k / ns))
    return [(SHAPES[i % ns], TEXTURES[(i // ns) % nt], ARRANGEMENTS[i // (ns * nt)]) for i in range(k)]


def class_names(k: int) -> list[str]:
    return [f"{i:02d}-{s}-{t}" + ("" if a == "single" else f"-{a}") for i, (s, t, a) in enumerate(class_grid(k))]


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to a shape of radius about r
    centred at u = v = 0."""
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    if shape == "disk":
        return rho - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.85 * r
    if shape in ("triangle", "hexagon"):
        n = 3 if shape == "triangle" else 6
        apothem = r * (0.62 if n == 3 else 0.9)
        sector = np.mod(phi + np.pi / 2, 2 * np.pi / n) - np.pi / n
        return rho * np.cos(sector) - apothem
    if shape == "cross":
        w = 0.33 * r
        bar1 = np.maximum(np.abs(u) - r, np.abs(v) - w)
        bar2 = np.maximum(np.abs(v) - r, np.abs(u) - w)
        return np.minimum(bar1, bar2)
    if shape == "ring":
        return np.abs(rho - 0.7 * r) - 0.3 * r
    if shape == "star":
        return rho - r * (0.68 + 0.32 * np.cos(5 * phi))
    if shape == "crescent":
        bite = np.hypot(u - 0.55 * r, v) - 0.85 * r
        return np.maximum(rho - r, -bite)
    raise ValueError(shape)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, period: float, phase: float) -> np.ndarray:
    """Weight in [0, 1] of the object's first colour at each pixel."""
    w = 2 * np.pi / period
    if texture == "solid":
        return np.ones_like(u)
    if texture == "hstripes":
        f = np.sin(w * v + phase)
    elif texture == "vstripes":
        f = np.sin(w * u + phase)
    elif texture == "diagonal":
        f = np.sin(w * (u + v) / np.sqrt(2) + phase)
    elif texture == "checker":
        f = np.sin(w * u + phase) * np.sin(w * v + phase) * 2
    elif texture == "dots":
        du = np.mod(u / period + phase, 1.0) - 0.5
        dv = np.mod(v / period + phase, 1.0) - 0.5
        f = (0.3 - np.hypot(du, dv)) * 8
    else:
        raise ValueError(texture)
    return np.clip(0.5 + 1.5 * f, 0.0, 1.0)


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours far enough apart for a texture to show (the last try stands if none is)."""
    a = rng.uniform(0, 255, 3)
    for _ in range(20):
        b = rng.uniform(0, 255, 3)
        if np.abs(a - b).sum() > CONTRAST:
            break
    return a, b


def render(spec: tuple[str, int, int], *, seed: int, size: int, classes: int) -> np.ndarray:
    """One image: spec = (split, label, index) -> (size, size, 3) uint8."""
    split, label, index = spec
    shape, texture, arrangement = class_grid(classes)[label]
    rng = np.random.default_rng([seed, _SPLIT_ID[split], label, index])
    s = size / 72.0  # every length below is in pixels of a 72-pixel image
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5

    # Background: a colour gradient, low-frequency blotches, then distractor blobs.
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    g = ((x - size / 2) * np.cos(ang) + (y - size / 2) * np.sin(ang)) / size + 0.5
    img = c0 + (c1 - c0) * np.clip(g, 0, 1)[..., None]
    for _ in range(3):
        fx, fy = rng.uniform(1, 4, 2) * 2 * np.pi / size
        img += rng.normal(0, WAVES, 3) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))[..., None]

    def blob():
        bx, by = rng.uniform(0, size, 2)
        ra, rb = rng.uniform(3, 9, 2) * s
        th = rng.uniform(0, np.pi)
        du, dv = x - bx, y - by
        d = np.hypot((du * np.cos(th) + dv * np.sin(th)) / ra, (-du * np.sin(th) + dv * np.cos(th)) / rb)
        return np.clip((1 - d) * min(ra, rb), 0, 1)[..., None], rng.uniform(0, 255, 3)

    for _ in range(rng.integers(*BLOBS)):
        m, col = blob()
        img = img * (1 - m) + col * m

    # The object (or two copies of it), the only thing that carries the class.
    radius = rng.uniform(*RADIUS) * s
    theta = rng.uniform(-15, 15) * np.pi / 180
    period = rng.uniform(*PERIOD) * s
    phase = rng.uniform(0, 2 * np.pi)
    fg1, fg2 = _colour_pair(rng)
    if arrangement == "single":
        centres = [rng.uniform(0.33, 0.67, 2) * size]
    else:
        radius *= 0.62
        cx, cy = rng.uniform(0.38, 0.62, 2) * size
        gap = radius * rng.uniform(1.1, 1.5)
        along = rng.uniform(0, np.pi)
        centres = [(cx + sgn * gap * np.cos(along), cy + sgn * gap * np.sin(along)) for sgn in (-1, 1)]
    for cx, cy in centres:
        du, dv = x - cx, y - cy
        u = du * np.cos(theta) + dv * np.sin(theta)
        v = -du * np.sin(theta) + dv * np.cos(theta)
        mask = np.clip(0.5 - _shape_distance(shape, u, v, radius), 0, 1)[..., None]
        t = _texture(texture, u, v, period, phase)[..., None]
        img = img * (1 - mask) + (fg1 * t + fg2 * (1 - t)) * mask

    # Occluders in front of the object, sometimes.
    for _ in range(rng.integers(*OCCLUDERS)):
        m, col = blob()
        img = img * (1 - m) + col * m

    # Illumination: overall level, a colour cast, a linear falloff; then sensor noise.
    light = rng.uniform(0.55, 1.25) * rng.uniform(0.8, 1.2, 3)
    ang = rng.uniform(0, 2 * np.pi)
    fall = 1 + rng.uniform(0, 0.5) * (((x - size / 2) * np.cos(ang) + (y - size / 2) * np.sin(ang)) / size)
    img = img * light * fall[..., None] + rng.normal(0, rng.uniform(*NOISE), img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def synthesize(dst: Path, classes: int, per_class: int, seed: int = 0, image_size: int = 72,
               val_per_class: int | None = None, workers: int | None = None) -> Path:
    """Write the synthetic set (train: per_class images per class; val: val_per_class, by
    default a fifth of per_class) in prepare's layout; resumes an interrupted run. Returns dst."""
    if not 1 <= per_class <= MAX_SYNTH_PER_CLASS or not 8 <= image_size <= MAX_IMAGE_SIDE:
        raise DataError(f"the synthetic set needs per_class in 1..{MAX_SYNTH_PER_CLASS} and image_size in "
                        f"8..{MAX_IMAGE_SIDE} (got {per_class}, {image_size})")
    val_per_class = max(1, per_class // 5) if val_per_class is None else val_per_class
    if not 1 <= val_per_class <= MAX_SYNTH_PER_CLASS:
        raise DataError(f"val_per_class must be in 1..{MAX_SYNTH_PER_CLASS}, got {val_per_class}")
    if seed < 0:
        raise DataError(f"the seed must be >= 0, got {seed}")
    workers = worker_count(workers)
    names = class_names(classes)
    work = {split: [Item((split, label, i), f"{split}/{names[label]}/{split}-{label:02d}-{i:05d}.jpg", label)
                    for label in range(classes) for i in range(n)]
            for split, n in (("train", per_class), ("val", val_per_class))}
    params = {"kind": "synthetic", "generator": GENERATOR, "classes": classes, "per_class": per_class, "val_per_class": val_per_class,
              "seed": seed, "image_size": image_size, "quality": QUALITY}
    build(Path(dst), params=params, classes=names, work=work,
          produce=functools.partial(render, seed=seed, size=image_size, classes=classes),
          size=image_size, quality=QUALITY, workers=workers, label=f"synth {dst}")
    return Path(dst)


def builtin_dir(cfg: Config) -> Path:
    """Where the built-in set of a config lives: under data/, named by what it holds."""
    d = cfg.data
    return Path("data") / f"synthetic-v{GENERATOR}-{d.synth_classes}x{d.synth_per_class}-{d.image_size}px"


def dataset_root(cfg: Config, data: str | Path | None) -> Path:
    """`data` when given (a prepared set), else the config's built-in synthetic set, made on
    first use."""
    return Path(data) if data is not None else ensure_synthetic(builtin_dir(cfg), cfg)


def ensure_synthetic(dst: Path, cfg: Config) -> Path:
    """The synthetic set for cfg (cfg.data.synth_classes x synth_per_class at cfg.data.image_size,
    seed 0) at dst: reused when complete, otherwise made (or finished) now."""
    d = cfg.data
    dst = Path(dst)
    if (dst / META).is_file():
        meta = open_dataset(dst).meta
        p = meta.get("params", {})
        want = {"kind": "synthetic", "generator": GENERATOR, "classes": d.synth_classes, "per_class": d.synth_per_class,
                "seed": 0, "image_size": d.image_size}
        if any(p.get(k) != v for k, v in want.items()):
            raise DataError(f"{dst} holds another dataset ({', '.join(f'{k}={p.get(k)!r}' for k in want)}); "
                            f"this config wants {', '.join(f'{k}={v!r}' for k, v in want.items())}: "
                            "delete it or give another directory")
        return dst
    print(f"making the synthetic dataset {dst}: {d.synth_classes} classes x {d.synth_per_class} "
          f"training images of {d.image_size}x{d.image_size}", file=sys.stderr)
    # Two runs started together on a fresh clone: the second waits for the first to make it.
    with DirLock(dst, "dataset", wait=True, on_wait=lambda msg: print(msg, file=sys.stderr)):
        return synthesize(dst, d.synth_classes, d.synth_per_class, seed=0, image_size=d.image_size)
