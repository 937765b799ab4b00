"""The paper's PCA lighting ("altering the intensities of RGB channels", section 4.1), in one
place: the principal components of the training set's RGB covariance (computed by build.py
from the stored pixels, saved in stats.npz) and the shift they give each image, drawn into
the epoch plan and applied by every loader.

Units. The paper adds [p1 p2 p3][a1 l1, a2 l2, a3 l3]^T to every RGB pixel, a_i ~ N(0, 0.1^2), with
p_i, l_i the eigenvectors and eigenvalues of the RGB covariance. The formula multiplies a
variance by a unitless alpha and adds it to a pixel, so its size depends on the pixel units:
  - here (the convention of this project): l_i are the eigenvalues of the covariance of pixels
    on the 0..1 scale, l_i(0..1) = l_i(0..255) / 255^2, and the shift is returned on the 0..255
    scale: 255 * P (a * l(0..1)) = P (a * l(0..255) / 255). For ImageNet-like images (top
    eigenvalue about 0.2 on 0..1 pixels) alpha std 0.1 moves pixels by about 5 levels along the
    first component: the size the paper's "alpha std 0.1" gives on 0..1 pixels. Taken on the
    0..255 scale instead, the same formula would move them by about 1,300 levels.
  - the 2012 code (convdata.py:113, :203) multiplies a_i by stored per-component values it
    calls "stdevs" (batches.meta 'color_pca', computed outside the released code), on the 0..255
    scale: P (a * s). If s_i = sqrt(l_i(0..255)), the square root the name suggests, its shift is
    255 / sqrt(l_i(0..255)) = 1 / sqrt(l_i(0..1)) times ours (about 2.2x for l = 0.2); the released
    code cannot confirm what s holds.
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
    row of alpha (n, 3), with lambda the eigenvalues of 0..1 pixels: given eigvals of the 0..255
    covariance (stats.npz), P (alpha * eigvals / 255) in 0..255 units (see above)."""
    return (alpha * (eigvals / 255.0)) @ eigvecs.T
