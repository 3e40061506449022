"""Bootstrap over runs, vectorised.

A resample is a vector of counts over the original points (multinomial draws), so the B refits
of a bootstrap run as one batched computation with the same objective as the point estimate
instead of B multi-start fits: thousands of resamples of every fit take seconds. Resamples the
point estimator would refuse (too few distinct budgets or sizes, no trend) come back as NaN rows
and are counted by the caller, never silently refitted differently. Every function takes `seed`:
an int or a `numpy.random.Generator`.
"""
from __future__ import annotations

import math

import numpy as np

from imgsynth.scaling import estimators as est


Seed = int | np.random.Generator
CI_LEVEL = 0.95
MIN_OK_FRACTION = 0.5  # fewer successful resamples than this and no interval is reported


def interval(samples, axis: int = 0):
    """Percentile interval over the finite resamples, or None when too few succeeded."""
    samples = np.asarray(samples, float)
    ok = np.isfinite(samples)
    if ok.sum(axis=axis).min() < max(10, MIN_OK_FRACTION * samples.shape[axis]):
        return None
    q = 50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)
    return np.nanpercentile(np.where(ok, samples, np.nan), q, axis=axis)


def ci(samples) -> list[float] | None:
    """`interval` of a 1-D sample as [low, high], or None."""
    iv = interval(samples)
    return None if iv is None else [float(iv[0]), float(iv[1])]


def se(samples) -> float | None:
    """Bootstrap standard error over the finite resamples, or None when too few succeeded."""
    samples = np.asarray(samples, float)
    ok = np.isfinite(samples)
    if ok.sum() < max(10, MIN_OK_FRACTION * len(samples)):
        return None
    return float(np.std(samples[ok], ddof=1))


def resample_counts(n: int, n_boot: int, seed: Seed) -> np.ndarray:
    """(n_boot, n) counts of each point in a resample of n points drawn with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _distinct_present(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample, how many distinct x values (up to `est.DISTINCT_RTOL`) it contains."""
    ids = est.cluster_ids(x)
    onehot = np.eye(ids.max() + 1)[ids]
    return np.sum((counts > 0) @ onehot > 0, axis=1)


def _not_flat(values: np.ndarray, counts: np.ndarray, tol: float) -> np.ndarray:
    present = counts > 0
    hi = np.max(np.where(present, values, -np.inf), axis=-1)
    lo = np.min(np.where(present, values, np.inf), axis=-1)
    return hi - lo >= tol


def bootstrap_compute_law(C, y, law: est.ComputeLaw, *, n_boot: int, seed: Seed,
                          delta: float = 0.05, alpha_bounds=(1e-3, 3.0)) -> np.ndarray:
    """(n_boot, 3) resampled (E, A, alpha) of y(C) = E + A·C^-α; NaN rows for refused resamples.

    Each resample starts from the full-data fit and from its own best grid exponent, as the
    point estimate's multi-start does, and keeps the better optimum."""
    x, ly, c0 = est.compute_inputs(C, y)
    counts = resample_counts(len(x), n_boot, seed)
    bounds = est.compute_bounds(ly, alpha_bounds)
    full = np.clip([law.E, math.log(law.A) - law.alpha * math.log(c0), law.alpha],
                   bounds[:, 0], bounds[:, 1])
    grid = est.compute_grid_starts(x, ly, counts, alpha_bounds)
    scores = est.huber_objective(est.compute_log_model(grid, x) - ly, counts[:, None, :], delta)
    grid_best = grid[np.arange(n_boot), np.argmin(scores, axis=1)]
    starts = np.concatenate([np.broadcast_to(full, (n_boot, 3)), grid_best])
    theta, f = est.lm_huber_batch(starts, *est.compute_solver(x), ly,
                                  np.concatenate([counts, counts]), delta, bounds)
    pick = np.where(f[:n_boot] <= f[n_boot:], 0, 1)
    theta = theta.reshape(2, n_boot, 3)[pick, np.arange(n_boot)]
    ok = (_distinct_present(np.exp(x), counts) >= 3) & _not_flat(ly, counts, 1e-9)
    ok &= _not_flat(est.compute_log_model(theta, x), counts, est.MIN_TREND)
    out = np.stack([theta[:, 0], np.exp(theta[:, 1] + theta[:, 2] * math.log(c0)),
                    theta[:, 2]], -1)
    out[~ok] = np.nan
    return out


@est.one_blas_thread
def bootstrap_loss_law(N, D, L, *, n_boot: int, seed: Seed, law: est.LossLaw | None = None,
                       delta: float = est.LOSS_HUBER_DELTA, exp_bounds=est.EXPONENT_BOUNDS,
                       grid_starts: int = 2, chunk: int = 200) -> np.ndarray:
    """(n_boot, 5) resampled (E, A, alpha, B, beta) of L(N, D), each refitted with the default
    estimator `est.fit_loss_law`: the same Huber objective on log residuals, minimised by
    L-BFGS-B. `law` is the full-data fit (computed when not given).

    Per resample the starts are that fit (a warm start) and the resample's `grid_starts` best
    points of the start grid (scored for all resamples in one matrix product); all run to
    convergence in one batched Levenberg–Marquardt pass, and the best is polished by L-BFGS-B."""
    xn, xd, L, n0, d0 = est.loss_inputs(N, D, L)
    ll = np.log(L)
    counts = resample_counts(len(L), n_boot, seed)
    if law is None:
        law = est.fit_loss_law(N, D, L, delta=delta, exp_bounds=exp_bounds)
    bounds = est.loss_bounds(ll, exp_bounds)
    full = est.loss_theta(law, n0, d0, bounds)
    grid = est.loss_grid(ll, exp_bounds)
    per_point = est.huber_terms(est.loss_log_model(grid, xn, xd) - ll, delta)  # (G, n)
    theta = np.empty((n_boot, 5))
    for i in range(0, n_boot, chunk):
        c = counts[i:i + chunk]
        best = np.argsort(c @ per_point.T, axis=1)[:, :grid_starts]
        starts = np.concatenate([np.broadcast_to(full, (len(c), 5)),
                                 grid[best].transpose(1, 0, 2).reshape(-1, 5)])
        t, f = est.lm_huber_batch(starts, *est.loss_solver(xn, xd), ll,
                                  np.tile(c, (grid_starts + 1, 1)), delta, bounds)
        pick = np.argmin(f.reshape(grid_starts + 1, len(c)), axis=0)
        t = t.reshape(grid_starts + 1, len(c), 5)[pick, np.arange(len(c))]
        theta[i:i + chunk] = [est.loss_lbfgs(s, xn, xd, ll, w, delta, bounds).x
                              for s, w in zip(t, c)]
    out = np.stack([np.exp(theta[:, 0]), np.exp(theta[:, 1]) * n0 ** theta[:, 2], theta[:, 2],
                    np.exp(theta[:, 3]) * d0 ** theta[:, 4], theta[:, 4]], -1)
    ok = (_distinct_present(np.exp(xn), counts) >= 3) & (_distinct_present(np.exp(xd), counts) >= 3)
    ok &= _not_flat(ll, counts, 1e-9)
    out[~ok] = np.nan
    return out
