"""isoFLOP analysis of any table: runs grouped into compute budgets, a least-squares parabola of
loss in ln N per budget, and the frontier N*(C) = K·C^a through the minima the parabolas accept.

Budgets come from labels when the table has them (a grid's nominal budget, a column of the CSV)
and are otherwise found by clustering the runs' training FLOPs in log space. Joining neighbours
closer than a fixed tolerance fails both ways on real tables: at 2% the jittered FLOPs of 9
nominal budgets fell into 99 "budgets", and any looser tolerance chains neighbouring budgets into
one. Mean shift finds the modes of the log-FLOP density instead.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from imgsynth.scaling import bootstrap as boot
from imgsynth.scaling import estimators as est

BANDWIDTH_DEX = 0.05  # mean-shift bandwidth in log10 FLOPs: a budget's runs lie within ≈ ±12%
MIN_SIZES = 3  # distinct model sizes a budget needs before a parabola is fitted
ESTIMATOR = ("least-squares parabola of loss in ln N per budget; frontier N* = K*C^a by least "
             "squares in log-log over the accepted minima")


@dataclasses.dataclass(frozen=True)
class Parabola:
    """L ≈ c2·u² + c1·u + c0 with u = ln N, fitted to the runs of one compute budget."""
    c2: float
    c1: float
    c0: float

    def __call__(self, N) -> np.ndarray:
        u = np.log(np.asarray(N, float))
        return self.c2 * u * u + self.c1 * u + self.c0

    @property
    def n_opt(self) -> float:
        return math.exp(-self.c1 / (2.0 * self.c2))

    @property
    def loss_opt(self) -> float:
        return float(self(self.n_opt))


def fit_isoflop(N, L) -> Parabola:
    """Least-squares parabola in ln N; refuses curves without an interior minimum."""
    N, L = est.validated(N=N, L=L)
    est.require(est.distinct_count(N), 3,
                "distinct model sizes at one budget for an isoFLOP parabola")
    est.require_not_flat(L, "isoFLOP curve")
    c2, c1, c0 = np.polyfit(np.log(N), L, 2)
    if c2 <= 0:
        raise est.FitError("isoFLOP curve is not convex in ln N (no interior minimum); the "
                           "budget's optimum lies outside the sizes trained")
    par = Parabola(float(c2), float(c1), float(c0))
    if not N.min() <= par.n_opt <= N.max():
        raise est.FitError(f"isoFLOP parabola's minimum N = {par.n_opt:.3g} lies outside the "
                           f"sizes trained ({N.min():.3g} to {N.max():.3g}); the budget's "
                           "optimum is not bracketed")
    return par


def fit_frontier(C, n_opt) -> tuple[float, float]:
    """N*(C) = K·C^a through isoFLOP minima by least squares in log space; returns (a, K)."""
    C, n_opt = est.validated(C=C, n_opt=n_opt)
    est.require(est.distinct_count(C), 2, "isoFLOP minima at distinct budgets for the frontier")
    a, logk = np.polyfit(np.log(C), np.log(n_opt), 1)
    return float(a), float(math.exp(logk))


def cluster_log_flops(C, bandwidth_dex: float = BANDWIDTH_DEX, iters: int = 500) -> np.ndarray:
    """Integer budget label per run from its FLOPs alone, by 1-D mean shift with a Gaussian kernel
    of `bandwidth_dex` in log10 C: each run climbs to a mode of the kernel density, and runs that
    reach the same mode share a budget. Labels increase with compute."""
    x = np.log10(np.asarray(C, float))
    if not np.all(np.isfinite(x)):
        raise est.NonFiniteError("FLOPs must be finite and > 0 to be clustered into budgets")
    m = x.copy()
    for _ in range(iters):
        new = np.empty_like(m)
        for i in range(0, len(m), 2048):   # bounded memory for large tables
            w = np.exp(-0.5 * ((m[i:i + 2048, None] - x[None]) / bandwidth_dex) ** 2)
            new[i:i + 2048] = w @ x / w.sum(axis=1)
        moved = np.max(np.abs(new - m), initial=0.0)
        m = new
        if moved < 1e-7 * bandwidth_dex:
            break
    order = np.argsort(m)
    labels = np.empty(len(m), int)
    labels[order] = np.concatenate([[0], np.cumsum(np.diff(m[order]) > bandwidth_dex / 4)])
    return labels


def _weighted_min(N, L, counts) -> float:
    if est.distinct_count(N[counts > 0]) < 3:
        return math.nan
    c2, c1, _ = np.polyfit(np.log(N), L, 2, w=np.sqrt(counts))
    return math.exp(-c1 / (2 * c2)) if c2 > 0 else math.nan


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else math.nan


def analyse(C, N, L, *, groups=None, n_bootstrap: int = 1000, seed: boot.Seed = 0,
            bandwidth_dex: float = BANDWIDTH_DEX, min_sizes: int = MIN_SIZES) -> dict[str, Any]:
    """isoFLOP parabolas and the frontier for runs with compute C, size N and loss L.

    `groups`: a budget label per run (any hashable values), or None to cluster log C
    (`cluster_log_flops`). A budget's value is the median C of its runs. Budgets with fewer than
    `min_sizes` distinct sizes, or whose parabola is not convex or does not bracket its minimum,
    are recorded with the reason and left out of the frontier. Intervals: each budget's runs are
    resampled (`n_bootstrap` times, one stream from `seed`); the frontier exponent pairs the
    per-budget resamples by index (a stratified bootstrap)."""
    C, N, L = (np.asarray(v, float) for v in (C, N, L))
    if groups is None:
        ids = cluster_log_flops(C, bandwidth_dex)
        grouping = f"clustered: mean shift in log10 FLOPs, bandwidth {bandwidth_dex:g} dex"
    else:
        _, ids = np.unique(np.asarray(groups), return_inverse=True)
        grouping = "labels"
    rng = np.random.default_rng(seed)
    order = sorted(set(ids.tolist()), key=lambda k: np.median(C[ids == k]))
    out: dict[str, Any] = {"estimator": ESTIMATOR, "grouping": grouping, "min_sizes": min_sizes,
                           "budgets": []}
    resampled: dict[float, np.ndarray] = {}
    for k in order:
        sel = ids == k
        b = float(np.median(C[sel]))
        item: dict[str, Any] = {"budget": b, "n": N[sel].tolist(), "loss": L[sel].tolist()}
        sizes = est.distinct_count(N[sel])
        try:
            if sizes < min_sizes:
                raise est.TooFewPointsError(f"{sizes} distinct size(s) at this budget, fewer "
                                            f"than the {min_sizes} required")
            par = fit_isoflop(N[sel], L[sel])
        except est.FitError as e:
            item["error"] = str(e)
        else:
            counts = boot.resample_counts(int(sel.sum()), n_bootstrap, rng)
            n_opts = np.array([_weighted_min(N[sel], L[sel], c) for c in counts])
            resampled[b] = n_opts
            item.update(parabola=[par.c2, par.c1, par.c0], n_opt=par.n_opt,
                        loss_opt=par.loss_opt, n_opt_ci95=boot.ci(n_opts))
        out["budgets"].append(item)
    minima = [x for x in out["budgets"] if "n_opt" in x]
    if len(minima) >= 2:
        try:
            a, K = fit_frontier([x["budget"] for x in minima], [x["n_opt"] for x in minima])
        except est.FitError as e:
            out["frontier"] = {"error": str(e)}
        else:
            logc = np.log(list(resampled))
            logn = np.log(np.stack(list(resampled.values()), 1))
            slopes = np.array([_slope(logc, row) for row in logn])
            out["frontier"] = {"form": "N*(C) = K*C^a", "a": a, "K": K, "a_ci95": boot.ci(slopes),
                               "n_budgets": len(minima)}
    return out

