"""95% intervals of the evaluation metrics, from resampling the evaluated images.

Per-image metrics (prompt following, alignment score, label following, CLIP score) are means of
per-image scores: a percentile bootstrap of MEAN_RESAMPLES = 1000 resamples, drawn within each
prompt category where the prompt set is balanced by category (so each resample keeps the design).
One (1000, n) gather and a mean: milliseconds.

Set-level distances (FD, KID) resample the generated images and recompute the distance against
the fixed real reference set; the reference is shared by every run evaluated with these settings,
so its own sampling noise moves all of them together and cannot decide a comparison. A bootstrap
with replacement fails here: duplicated images make a resample look like a smaller set. On
Gaussian features of 300 images its FD ran 9-10 % above the estimate (128-d and 1024-d; no
resample fell below it) and its 95 % range was 1.0-1.5x (128-d) and 2.4-2.8x (1024-d) that of FD
over fresh draws of 300 images. Half-samples without replacement have no duplicates and
reproduce the variance of a mean of all n images (up to n/(n-1)); on the same Gaussians their
range was 1.0-1.2x (128-d) and 0.9-1.1x (1024-d) that of fresh draws. Their FD is that of n/2
images, so the interval is their percentile spread placed around the full-set estimate
(`around`). SET_RESAMPLES = 100: each half-sample is an eigenproblem of n/2 rows whatever the
feature dimension (`frechet.fd_of_subsets`), 0.4-0.5 s per FD at n = 300 on a loaded 2-core
machine, ~2 s for every distance of both weight sets, a few % of the smallest runs' evaluation;
200 would cost twice that for little (the interval's width varies by 6 % between seeds at 100,
5 % at 200).

Each metric `name` is stored with `name_lo` and `name_hi` beside it (`add`), so readers of the
value are unchanged.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from imgsynth.metrics import frechet

LEVEL = 0.95
MEAN_RESAMPLES = 1000
SET_RESAMPLES = 100
_TAILS = (50 * (1 - LEVEL), 50, 50 * (1 + LEVEL))


def rng(seed: int, name: str) -> np.random.Generator:
    """A generator per (evaluation seed, metric): intervals reproduce and do not share draws."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def mean_interval(scores, *, seed: int, name: str, strata: Sequence | None = None,
                  n_resamples: int = MEAN_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-image `scores`; with `strata` (one label
    per image) each resample draws as many images from each stratum as it holds."""
    x = np.asarray(scores, float)
    if x.ndim != 1 or not len(x) or not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: need finite per-image scores, got shape {x.shape}")
    labels = np.zeros(len(x), int) if strata is None else np.unique(
        np.asarray(strata), return_inverse=True)[1]
    g = rng(seed, name)
    total = np.zeros(n_resamples)
    for k in np.unique(labels):
        members = x[labels == k]
        total += members[g.integers(0, len(members), (n_resamples, len(members)))].sum(axis=1)
    lo, _, hi = np.percentile(total / len(x), _TAILS)
    return float(lo), float(hi)


def half_samples(n: int, n_resamples: int, g: np.random.Generator) -> np.ndarray:
    """[n_resamples, max(n // 2, 2)] row indices, distinct within each row."""
    if n < 3:
        raise ValueError(f"{n} images are too few to resample (at least 3)")
    return g.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=1)[:, :max(n // 2, 2)]


def around(estimate: float, resampled: np.ndarray,
           floor: float | None = None) -> tuple[float, float]:
    """The percentile spread of `resampled` placed around `estimate` (see the module docstring)."""
    lo, mid, hi = np.percentile(resampled, _TAILS)
    low = estimate - (mid - lo)
    return (float(low if floor is None else max(low, floor)), float(estimate + (hi - mid)))


def fd_interval(estimate: float, feats, reference, *, seed: int, name: str,
                n_resamples: int = SET_RESAMPLES) -> tuple[float, float]:
    """Interval of `frechet.fd(feats, reference)` = `estimate` over half-samples of `feats`."""
    subsets = half_samples(len(feats), n_resamples, rng(seed, name))
    return around(estimate, frechet.fd_of_subsets(feats, reference, subsets), floor=0.0)


def kid_interval(estimate: float, feats, reference, *, seed: int, name: str,
                 n_resamples: int = SET_RESAMPLES) -> tuple[float, float]:
    """Interval of KID = `estimate` over half-samples of `feats` (MMD² of each against the whole
    reference; unbiased, so it may go below 0)."""
    subsets = half_samples(len(feats), n_resamples, rng(seed, name))
    return around(estimate, frechet.kid_of_subsets(feats, reference, subsets))


def add(out: dict, name: str, value: float, interval: tuple[float, float]) -> None:
    """`out[name] = value` with `name_lo` and `name_hi` beside it."""
    out[name] = float(value)
    out[f"{name}_lo"], out[f"{name}_hi"] = (float(v) for v in interval)
