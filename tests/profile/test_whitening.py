"""The whitening transforms: what they make of the fitted rows, and when they cannot be fitted."""

import numpy as np
import pytest

from sslray.profile.whitening import pca_whitening_fit, zca_fit


def _values(n: int = 40, d: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 5.0


@pytest.mark.parametrize("method", ["ZCA-cor", "ZCA"])
def test_zca_whitens_the_fitted_rows_and_stays_close_to_them(method):
    values = _values()
    white = zca_fit(values, method, epsilon=0.0).apply(values)
    assert np.allclose(np.cov(white, rowvar=False), np.eye(4), atol=1e-8)
    # ZCA's matrix is symmetric (a rotation, a scaling, the rotation back): the whitening closest to the
    # input (Kessy et al. 2018), so an output column still stands for its own feature
    matrix = zca_fit(values, method).matrix()
    assert np.allclose(matrix, matrix.T)


def test_zca_refuses_collinear_features_and_an_uncentred_correlation():
    values = _values()
    with pytest.raises(ValueError, match="have rank 4"):
        zca_fit(np.column_stack([values, values[:, 0] + values[:, 1]]))
    with pytest.raises(ValueError, match="center must be true"):
        zca_fit(values, "ZCA-cor", center=False)
    with pytest.raises(ValueError, match="ZCA-cor or ZCA"):
        zca_fit(values, "PCA")


def test_pca_whitening_keeps_the_components_asked_for_at_unit_variance():
    values = _values()
    white = pca_whitening_fit(values, n_components=2).apply(values)
    assert white.shape == (40, 2) and np.allclose(np.cov(white, rowvar=False), np.eye(2), atol=1e-8)
    assert pca_whitening_fit(values[:3]).matrix().shape == (4, 2)  # 3 rows span 2 directions
    with pytest.raises(ValueError, match="between 1 and 4"):
        pca_whitening_fit(values, n_components=5)
    with pytest.raises(ValueError, match="at least 2"):
        pca_whitening_fit(values[:1])
