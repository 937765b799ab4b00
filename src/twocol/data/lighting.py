"""The paper's PCA lighting ("altering the intensities of RGB channels", section 4.1), in one
place: the principal components of the training set's RGB covariance (computed by build.py
from the stored pixels, saved in stats.npz) and the shift they give each image, drawn into
the epoch plan and applied by every loader.

Units: the covariance and its eigenvalues are in 0..255 pixel units (stats.npz). The formula
adds P (alpha * lambda) with lambda a variance, so it is not scale-free; its usual size (alpha
std 0.1 shifting pixels by a few levels) is that of intensities in 0..1, so lambda is taken in
0..1 units and the shift returned in 0..255 units.
"""
from __future__ import annotations

import numpy as np


def pca(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of a 3x3 covariance, each vector's
    sign fixed so that its components sum to a positive number (eigh's signs are arbitrary)."""
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    vecs = vecs * np.where(vecs.sum(0) < 0, -1.0, 1.0)
    return vals, vecs


def lighting_shift(alpha: np.ndarray, eigvals: np.ndarray, eigvecs: np.ndarray) -> np.ndarray:
    """The shift P (alpha * lambda) that the paper adds to every pixel of an image, one row per
    row of alpha (n, 3): P (alpha * lambda_255) / 255 in 0..255 units (see above)."""
    return (alpha * (eigvals / 255.0)) @ eigvecs.T
