"""The PCA lighting's unit convention (data/lighting.py): the paper's formula on 0..1 pixels,
applied to 0..255 pixels."""
import numpy as np

from twocol.data.lighting import lighting_shift, pca


def covariance_255():
    """An RGB covariance on the 0..255 scale (of made-up correlated pixels)."""
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.8, 0.6], [0.0, 0.5, 0.4], [0.0, 0.0, 0.3]])
    pixels = 255 * (0.5 + 0.2 * rng.standard_normal((5000, 3)) @ mix)
    return np.cov(pixels.T)


def test_pca_is_sorted_sign_fixed_and_reconstructs_the_covariance():
    cov = covariance_255()
    vals, vecs = pca(cov)
    assert (np.diff(vals) < 0).all() and (vecs.sum(0) > 0).all()
    np.testing.assert_allclose(vecs @ np.diag(vals) @ vecs.T, cov, rtol=1e-10)


def test_shift_is_the_papers_formula_on_0_to_1_pixels_returned_in_0_to_255_units():
    cov = covariance_255()
    vals, vecs = pca(cov)
    alpha = np.random.default_rng(1).standard_normal((7, 3)) * 0.1
    vals01, vecs01 = pca(cov / 255.0 ** 2)  # the covariance of the same pixels on the 0..1 scale
    paper01 = (alpha * vals01) @ vecs01.T     # P [a_i l_i], in 0..1 units
    np.testing.assert_allclose(lighting_shift(alpha, vals, vecs), 255.0 * paper01, rtol=1e-10, atol=1e-12)


def test_its_size_for_an_imagenet_like_top_component():
    # Top eigenvalue 0.2 on 0..1 pixels (51^2 * 5 on 0..255 ones): alpha = 0.1 moves a pixel by
    # 0.1 * 0.2 * 255 = 5.1 levels along that component; the formula read on the 0..255 scale
    # would give 0.1 * 13005 = 1300 levels, and the 2012 code with stdevs sqrt(13005) = 114
    # would give 11.4.
    vals = np.array([0.2, 0.02, 0.005]) * 255.0 ** 2
    shift = lighting_shift(np.array([[0.1, 0.0, 0.0]]), vals, np.eye(3))
    np.testing.assert_allclose(shift, [[5.1, 0.0, 0.0]], rtol=1e-12)
