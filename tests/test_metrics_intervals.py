"""Intervals of evaluation metrics cover known values on synthetic data; the subset forms of FD
and KID equal the metrics themselves."""
import numpy as np
import pytest

from imgsynth.metrics import frechet, intervals


def test_mean_interval_covers_a_known_rate():
    rng = np.random.default_rng(0)
    covered = [lo <= 0.3 <= hi for lo, hi in (
        intervals.mean_interval(rng.random(300) < 0.3, seed=i, name="pf") for i in range(200))]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_strata_keep_the_design():
    scores = np.r_[np.ones(50), np.zeros(50)]
    assert intervals.mean_interval(scores, seed=0, name="x", strata=[0] * 50 + [1] * 50) == (
        0.5, 0.5)
    lo, hi = intervals.mean_interval(scores, seed=0, name="x")
    assert lo < 0.45 and hi > 0.55


@pytest.mark.parametrize("d", [3, 40])
def test_subset_forms_equal_the_metrics(d):
    rng = np.random.default_rng(d)
    a, b = rng.normal(size=(30, d)) + 0.4, rng.normal(size=(25, d))
    subsets = np.stack([rng.permutation(30)[:12] for _ in range(5)])
    np.testing.assert_allclose(frechet.fd_of_subsets(a, b, subsets),
                               [frechet.fd(a[s], b) for s in subsets], rtol=1e-5)
    full = frechet.kid_of_subsets(a, b, np.arange(30)[None])[0]
    kxx, kyy = frechet._poly_kernel(a, a), frechet._poly_kernel(b, b)
    expected = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (25 * 24)
                - 2 * frechet._poly_kernel(a, b).mean())
    assert full == pytest.approx(expected)
    with pytest.raises(ValueError, match="row indices below 30"):
        frechet.fd_of_subsets(a, b, [[0, 30]])


def test_fd_interval_covers_the_population_distance():
    """Generated features from a known Gaussian, one fixed reference set: the interval of each
    fresh draw of 120 images covers the distance between the Gaussian and the reference's fit."""
    rng = np.random.default_rng(1)
    mu, root = np.array([0.8, -0.5, 0.3]), np.array([[1.0, 0.3, 0.0], [0.0, 0.7, 0.2],
                                                     [0.0, 0.0, 1.2]])
    reference = rng.normal(size=(500, 3))
    stats = frechet.feature_stats(reference)
    truth = frechet.fd_from_stats(mu, root.T @ root, stats.mu, stats.sigma)
    covered = []
    for i in range(40):
        x = rng.normal(size=(120, 3)) @ root + mu
        lo, hi = intervals.fd_interval(frechet.fd(x, reference), x, reference, seed=i, name="fd",
                                       n_resamples=100)
        covered.append(lo <= truth <= hi)
    assert np.mean(covered) >= 0.8


def test_kid_interval_covers_the_population_mmd():
    """As for FD, against one fixed reference set: its MMD² to the generating Gaussian (the
    Gaussian's terms from 100,000 draws) is what each draw's interval must cover."""
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(150, 8))
    draw = lambda n: rng.normal(size=(n, 8)) + 0.3   # noqa: E731
    x1, x2 = draw(100_000), draw(100_000)
    kbb = frechet._poly_kernel(reference, reference)
    truth = (np.mean((np.sum(x1 * x2, 1) / 8 + 1) ** 3) + (kbb.sum() - np.trace(kbb)) / (150 * 149)
             - 2 * frechet._poly_kernel(x1[:20_000], reference).mean())
    covered = []
    for i in range(40):
        x = draw(150)
        kid = frechet.kid(x, reference, subset_size=50, num_subsets=20, seed=i).mean
        lo, hi = intervals.kid_interval(kid, x, reference, seed=i, name="kid", n_resamples=100)
        covered.append(lo <= truth <= hi)
    assert np.mean(covered) >= 0.8


def test_intervals_sit_beside_their_value():
    out = {}
    intervals.add(out, "fd_align", 3.0, (2.0, 4.5))
    assert out == {"fd_align": 3.0, "fd_align_lo": 2.0, "fd_align_hi": 4.5}
    with pytest.raises(ValueError, match="at least 3"):
        intervals.half_samples(2, 10, np.random.default_rng(0))
