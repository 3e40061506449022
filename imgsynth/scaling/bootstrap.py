"""Bootstrap over runs, vectorised.

A resample is a vector of counts over the original points (multinomial draws), so the B refits
of a bootstrap run as one batched computation with the same objective as the point estimate
instead of B calls into scipy: thousands of resamples of every fit take seconds on a laptop.
Resamples the point estimator would refuse (too few distinct budgets or sizes, no trend) come
back as NaN rows and are counted by the caller, never silently refitted differently.
"""
from __future__ import annotations

import math

import numpy as np

from imgsynth.scaling import estimators as est


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts of each point in a resample of n points drawn with replacement."""
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


def bootstrap_compute_law(C, y, law: est.ComputeLaw, *, n_boot: int, rng: np.random.Generator,
                          delta: float = 0.05, alpha_bounds=(1e-3, 3.0)) -> np.ndarray:
    """(n_boot, 3) resampled (E, A, alpha) of y(C) = E + A·C^-α; NaN rows for refused resamples.

    Each resample starts from the full-data fit and from its own best grid exponent, as the
    point estimate's multi-start does, and keeps the better optimum."""
    x, ly, c0 = est.compute_inputs(C, y)
    counts = resample_counts(len(x), n_boot, rng)
    bounds = est.compute_bounds(ly, alpha_bounds)
    full = np.clip([law.E, math.log(law.A) - law.alpha * math.log(c0), law.alpha],
                   bounds[:, 0], bounds[:, 1])
    grid = est.compute_grid_starts(x, ly, counts, alpha_bounds)
    scores = est.huber_objective(est.compute_log_model(grid, x) - ly, counts[:, None, :], delta)
    grid_best = grid[np.arange(n_boot), np.argmin(scores, axis=1)]
    starts = np.concatenate([np.broadcast_to(full, (n_boot, 3)), grid_best])
    theta, f = est.lm_huber_batch(starts, x, ly, np.concatenate([counts, counts]), delta, bounds)
    pick = np.where(f[:n_boot] <= f[n_boot:], 0, 1)
    theta = theta.reshape(2, n_boot, 3)[pick, np.arange(n_boot)]
    ok = (_distinct_present(np.exp(x), counts) >= 3) & _not_flat(ly, counts, 1e-9)
    ok &= _not_flat(est.compute_log_model(theta, x), counts, est.MIN_TREND)
    out = np.stack([theta[:, 0], np.exp(theta[:, 1] + theta[:, 2] * math.log(c0)),
                    theta[:, 2]], -1)
    out[~ok] = np.nan
    return out


def bootstrap_loss_law(N, D, L, *, n_boot: int, rng: np.random.Generator,
                       exp_bounds=est.EXPONENT_BOUNDS, chunk: int = 64) -> np.ndarray:
    """(n_boot, 5) resampled (E, A, alpha, B, beta) of L(N, D) by variable projection (the
    grid-and-zoom search of the point estimate, without its Nelder–Mead polish)."""
    xn, xd, L, n0, d0 = est.loss_inputs(N, D, L)
    counts = resample_counts(len(L), n_boot, rng)
    ab = np.concatenate([est.vp_search(xn, xd, L, counts[i:i + chunk], exp_bounds)
                         for i in range(0, n_boot, chunk)])
    coef, _ = est.vp_profile(xn, xd, L, counts, ab[:, :1], ab[:, 1:])
    E, A, B = coef[:, 0].T
    out = np.stack([E, A * n0 ** ab[:, 0], ab[:, 0], B * d0 ** ab[:, 1], ab[:, 1]], -1)
    ok = (_distinct_present(np.exp(xn), counts) >= 3) & (_distinct_present(np.exp(xd), counts) >= 3)
    ok &= _not_flat(np.log(L), counts, 1e-9)
    out[~ok] = np.nan
    return out
