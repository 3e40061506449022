"""Fréchet distance and KID against closed forms and on bad input."""
import numpy as np
import pytest
import scipy.linalg

from imgsynth.metrics import frechet


def _closed_form_diag(mu1, var1, mu2, var2):
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2)))


def test_fd_from_stats_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    var1, var2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    got = frechet.fd_from_stats(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(_closed_form_diag(mu1, var1, mu2, var2), rel=1e-10)


def test_fd_from_stats_matches_sqrtm_reference_on_full_covariances():
    rng = np.random.default_rng(1)
    d = 8
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet.fd_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fd_on_gaussian_samples_approaches_population_value():
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -0.5, 2.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([4.0, 1.0, 0.5, 0.25])
    x = mu1 + np.sqrt(var1) * rng.normal(size=(n, d))
    y = mu2 + np.sqrt(var2) * rng.normal(size=(n, d))
    expected = _closed_form_diag(mu1, var1, mu2, var2)  # = 5.25 + 1 + 0.1716 + 0 + 0.5625
    assert frechet.fd(x, y) == pytest.approx(expected, rel=0.02)


def test_fd_of_identical_sets_is_zero_even_when_covariance_is_singular():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 64))  # fewer samples than dims: rank-deficient covariance
    assert frechet.fd(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet.fd(x, x + 1.0) == pytest.approx(64.0, rel=1e-6)


def test_fd_small_sample_path_agrees_with_covariance_path():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 50)), 2.0 * rng.normal(size=(70, 50)) + 0.1  # N_a < d < N_b
    sx, sy = frechet.feature_stats(x), frechet.feature_stats(y)
    assert frechet.fd(x, y) == pytest.approx(frechet.fd_from_stats(*sx, *sy), rel=1e-6)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same = frechet.kid(x, y, subset_size=200, num_subsets=20, seed=0)
    shifted = frechet.kid(x, y + 0.5, subset_size=200, num_subsets=20, seed=0)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert shifted.mean > 10 * max(abs(same.mean), same.std)
    assert frechet.kid(x, y, subset_size=200, num_subsets=20, seed=0) == same  # seeded


def test_kid_matches_direct_unbiased_mmd_on_one_full_subset():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3)) + 0.3
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    m = 10
    ref = ((k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
           + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1)) - 2 * k(x, y).mean())
    got = frechet.kid(x, y, subset_size=10, num_subsets=3)
    assert got.mean == pytest.approx(ref, rel=1e-10)  # every subset is the full set, permuted
    assert got.std == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("a,b,match", [
    (np.zeros((5, 3)), np.zeros((5, 4)), "dimensions differ"),
    (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
    (np.zeros(5), np.zeros((5, 1)), "2-D"),
])
def test_bad_input_raises_clear_errors(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet.fd(a, b)
    with pytest.raises(ValueError, match=match):
        frechet.kid(a, b)
