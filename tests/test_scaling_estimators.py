"""Scaling-law estimators and their bootstrap: recovery of known laws from noisy synthetic data,
interval coverage, agreement of the two L(N, D) fits, and refusal of data that cannot be fitted."""
import math
import warnings

import numpy as np
import pytest
from scipy import optimize

from imgsynth.scaling import bootstrap as bs
from imgsynth.scaling import estimators as est
from imgsynth.scaling import isoflop

TRUE_C = est.ComputeLaw(E=0.8, A=1.6 * 1e15 ** 0.3, alpha=0.3)  # error 2.4 at 1e15 FLOPs
TRUE_ND = est.LossLaw(E=1.7, A=400.0, alpha=0.34, B=900.0, beta=0.28)
K = 422.0  # FLOPs per parameter per example


def compute_data(seed, noise=0.03, n=16):
    C = np.geomspace(1e15, 1e18, n)
    return C, TRUE_C(C) * np.exp(np.random.default_rng(seed).normal(0, noise, n))


def loss_data(seed, noise=0.005):
    N = np.repeat(np.geomspace(1e6, 1e8, 6), 4)
    D = np.tile(np.geomspace(1e15, 1e18, 4), 6) / (K * N)
    return N, D, TRUE_ND(N, D) * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))


def test_compute_law_recovers_known_parameters():
    C, y = compute_data(0, noise=0.01)
    law = est.fit_compute_law(C, y)
    assert law.alpha == pytest.approx(TRUE_C.alpha, abs=0.03)
    assert law.E == pytest.approx(TRUE_C.E, rel=0.1)
    grid = np.geomspace(1e15, 1e19, 9)
    np.testing.assert_allclose(law(grid), TRUE_C(grid), rtol=0.03)


def test_compute_bootstrap_intervals_cover_truth():
    """Across 20 synthetic studies the 95% intervals cover the true exponent and the true
    10×-extrapolated value in most of them (measured: 0.975 and 0.925 over 40)."""
    hits_alpha = hits_pred = 0
    for seed in range(20):
        C, y = compute_data(seed)
        law = est.fit_compute_law(C, y)
        P = bs.bootstrap_compute_law(C, y, law, n_boot=150, seed=100 + seed)
        assert np.isfinite(P).all()
        lo, hi = np.percentile(P[:, 2], [2.5, 97.5])
        hits_alpha += lo <= TRUE_C.alpha <= hi
        pred = P[:, 0] + P[:, 1] * 1e19 ** -P[:, 2]
        lo, hi = np.percentile(pred, [2.5, 97.5])
        hits_pred += lo <= TRUE_C(1e19) <= hi
    assert hits_alpha >= 17 and hits_pred >= 17, (hits_alpha, hits_pred)


def test_batched_solver_matches_scipy_least_squares():
    """The bootstrap's vectorised Levenberg–Marquardt reaches the point estimate's optimum."""
    C, y = compute_data(3)
    law = est.fit_compute_law(C, y)
    x, ly, c0 = est.compute_inputs(C, y)
    bounds = est.compute_bounds(ly, (1e-3, 3.0))
    theta, _ = est.lm_huber_batch(np.array([[0.1, 0.0, 1.0]]), *est.compute_solver(x), ly,
                                  np.ones((1, len(x))), 0.05, bounds)
    assert theta[0, 0] == pytest.approx(law.E, rel=1e-5)
    assert theta[0, 2] == pytest.approx(law.alpha, rel=1e-5)


def test_nnls_batch_equals_scipy_nnls():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(40, 9, 3))
    y = rng.normal(size=9)
    coef, rss = est.nnls_batch(M, y)
    for i in range(len(M)):
        c, r = optimize.nnls(M[i], y)
        np.testing.assert_allclose(coef[i], c, atol=1e-9)
        assert rss[i] == pytest.approx(r ** 2, rel=1e-9, abs=1e-12)


def test_loss_law_vp_recovers_truth_and_agrees_with_direct_fit():
    N, D, L = loss_data(0)
    vp = est.fit_loss_law_vp(N, D, L)
    direct = est.fit_loss_law(N, D, L)
    for law in (vp, direct):
        assert law.alpha == pytest.approx(TRUE_ND.alpha, abs=0.06)
        assert law.beta == pytest.approx(TRUE_ND.beta, abs=0.01)
        assert law.compute_optimal(K).a == pytest.approx(TRUE_ND.compute_optimal(K).a, abs=0.05)
    agreement = est.compare_loss_laws(vp, direct, N, D)
    assert agreement["max_rel_diff_on_data"] < 0.005
    assert agreement["a_diff"] < 0.02


def test_loss_bootstrap_interval_covers_compute_optimal_exponent():
    N, D, L = loss_data(1)
    P = bs.bootstrap_loss_law(N, D, L, n_boot=200, seed=8)
    a = P[:, 4] / (P[:, 2] + P[:, 4])
    lo, hi = np.nanpercentile(a, [2.5, 97.5])
    assert lo <= TRUE_ND.compute_optimal(K).a <= hi
    assert hi - lo < 0.2


def test_compute_optimal_allocation_minimises_loss_at_fixed_compute():
    opt = TRUE_ND.compute_optimal(K)
    assert opt.a + opt.b == pytest.approx(1.0)
    C = 1e19
    res = optimize.minimize_scalar(lambda u: TRUE_ND(math.exp(u), C / (K * math.exp(u))),
                                   bounds=(10, 30), method="bounded", options={"xatol": 1e-10})
    assert opt.n_opt(C) == pytest.approx(math.exp(res.x), rel=1e-4)
    assert K * opt.n_opt(C) * opt.d_opt(C) == pytest.approx(C, rel=1e-12)


def test_isoflop_parabola_minimum_and_frontier():
    N = np.geomspace(1e6, 1e8, 5)
    C = 1e17
    L = TRUE_ND(N, C / (K * N))
    par = isoflop.fit_isoflop(N, L)
    assert N.min() < par.n_opt < N.max()
    assert par.n_opt == pytest.approx(TRUE_ND.compute_optimal(K).n_opt(C), rel=0.25)
    a, _ = isoflop.fit_frontier([1e16, 1e17, 1e18], [1e6, 1e6 * 10 ** 0.5, 1e7])
    assert a == pytest.approx(0.5)
    with pytest.raises(est.FitError, match="not convex"):
        isoflop.fit_isoflop(N, 20.0 - L)
    u = np.log(N)   # convex, rising over all sizes: its vertex is far below the smallest
    with pytest.raises(est.FitError, match="outside the sizes trained"):
        isoflop.fit_isoflop(N, 0.01 * (u - np.log(1e3)) ** 2)


@pytest.mark.parametrize("C, y, error, match", [
    ([1e15, 1e16, 1e17], [3.0, 2.0, 1.5], est.TooFewPointsError, "need at least 4"),
    ([1e15, 1e15 * 1.001, 1e17, 1e17 * 1.01], [3.0, 2.9, 2.0, 1.9], est.TooFewPointsError,
     "distinct compute"),
    ([1e15, 1e16, 1e17, np.nan], [3.0, 2.0, 1.5, 1.2], est.NonFiniteError, "non-finite"),
    ([1e15, 1e16, 1e17, 1e18], [3.0, np.inf, 1.5, 1.2], est.NonFiniteError, "non-finite"),
    ([1e15, 1e16, 1e17, 1e18], [3.0, -2.0, 1.5, 1.2], est.NonFiniteError, "> 0"),
    ([1e15, 1e16, 1e17, 1e18], [2.0, 2.0, 2.0, 2.0], est.FlatDataError, "all values are equal"),
    ([1e15, 1e16, 1e17, 1e18], [1.0, 1.2, 1.5, 2.0], est.FlatDataError, "no decreasing trend"),
])
def test_compute_law_refuses_degenerate_data(C, y, error, match):
    with pytest.raises(error, match=match):
        est.fit_compute_law(C, y)


def test_loss_law_refuses_degenerate_data():
    N, D, L = loss_data(2)
    with pytest.raises(est.TooFewPointsError):
        est.fit_loss_law_vp(N[:5], D[:5], L[:5])
    with pytest.raises(est.TooFewPointsError, match="model sizes"):
        est.fit_loss_law_vp(np.full(8, 1e7), D[:8], L[:8])
    bad = L.copy()
    bad[3] = np.nan
    with pytest.raises(est.NonFiniteError):
        est.fit_loss_law(N, D, bad)
    with pytest.raises(est.FlatDataError):
        est.fit_loss_law_vp(N, D, np.full_like(L, 2.0))


def test_bootstrap_marks_refused_resamples_nan():
    """With two points per budget, some resamples miss a budget and cannot be refitted."""
    C = np.repeat([1e15, 1e16, 1e17, 1e18], 2) * np.tile([1.0, 1.001], 4)
    y = TRUE_C(C)
    law = est.fit_compute_law(C, y)
    P = bs.bootstrap_compute_law(C, y, law, n_boot=300, seed=0)
    failed = np.isnan(P[:, 0])
    assert 0 < failed.sum() < 150
    assert np.isfinite(P[~failed]).all()


def test_exponent_at_bound_warns():
    C = np.geomspace(1e15, 1e18, 8)
    y = 1.0 + 5.0 * (C / 1e15) ** -2.9 + 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit_compute_law(C, y, alpha_bounds=(1e-3, 1.0))
    assert any("at its bound" in str(w.message) for w in caught)
