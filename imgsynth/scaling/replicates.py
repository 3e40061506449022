"""Seed replicates: runs of one configuration (paradigm, size, budget, ablation) that differ only in
`seed`, averaged into one row for the report's figures, findings and tables.

A group's value of each number is the mean over its seeds, `<metric>_sd` the standard deviation
across seeds (metrics and end-of-training eval losses), and each metric's interval the wider, at
each end, of
- the Student-t 95% interval of the mean over seeds, whose spread already holds each seed's
  evaluation noise; and
- the evaluation intervals combined as for a mean of independent estimates (each side's
  half-widths in quadrature, divided by the number of seeds),
so a lead is never stated more tightly than the seeds disagree, nor than one evaluation can
resolve when a few seeds agree by chance. A configuration with one seed keeps its own interval.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from imgsynth.scaling.table import INTERVAL_SUFFIXES, STRING_COLUMNS

LEVEL = 0.95
LOSSES = ("final/eval_loss", "final/eval_loss_ema")   # no interval, but a spread across seeds


def group_key(row: dict) -> tuple:
    """What replicates share; a run without a grid budget is a group of its own."""
    budget = row.get("budget", math.nan)
    if not isinstance(budget, float) or not math.isfinite(budget):
        return ("run", row["run"])
    return (row["paradigm"], row["size"], f"{budget:.6g}", row.get("ablation", ""))


def interval_metrics(row: dict) -> list[str]:
    """Columns of `row` with an interval beside them."""
    return [c for c in row if f"{c}_lo" in row and f"{c}_hi" in row]


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """One row per group of replicates, in the order groups first appear; `seeds` names them
    ('0,1,2') and `n_seeds` counts them. A group of one is its run's row with those two added."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    return [_combine(sorted(g, key=lambda r: _seed(r))) for g in groups.values()]


def _seed(row: dict) -> float:
    s = row.get("seed", math.nan)
    return s if isinstance(s, float) and math.isfinite(s) else 0.0


def _combine(group: list[dict]) -> dict:
    out = dict(group[0])
    out["seeds"] = ",".join(f"{_seed(r):g}" for r in group)
    out["n_seeds"] = len(group)
    if len(group) == 1:
        return out
    metrics = interval_metrics(group[0])
    bounds = {f"{m}{x}" for m in metrics for x in INTERVAL_SUFFIXES}
    for column, value in group[0].items():
        if (column in STRING_COLUMNS or column in bounds or column == "seed"
                or not isinstance(value, float)):
            continue
        values = np.array([r.get(column, math.nan) for r in group], float)
        finite = values[np.isfinite(values)]
        out[column] = float(finite.mean()) if len(finite) else math.nan
    for m in LOSSES:
        values = np.array([r.get(m, math.nan) for r in group], float)
        out[f"{m}_sd"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() >= 2 else (
            math.nan)
    for m in metrics:
        values = np.array([r[m] for r in group], float)
        lo = np.array([r[f"{m}_lo"] for r in group], float)
        hi = np.array([r[f"{m}_hi"] for r in group], float)
        ok = np.isfinite(values)
        out[f"{m}_sd"] = float(np.std(values[ok], ddof=1)) if ok.sum() >= 2 else math.nan
        out[f"{m}_lo"], out[f"{m}_hi"] = mean_interval(values[ok], lo[ok], hi[ok])
    return out


def mean_interval(values, lo, hi) -> tuple[float, float]:
    """The interval of the mean of `values` (one per seed) with evaluation intervals [lo, hi]
    (see the module docstring); NaN when a bound is unknown."""
    k = len(values)
    if k == 0 or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return math.nan, math.nan
    mean = float(np.mean(values))
    if k == 1:
        return float(lo[0]), float(hi[0])
    seeds = stats.t.ppf(0.5 + LEVEL / 2, k - 1) * np.std(values, ddof=1) / math.sqrt(k)
    down = math.sqrt(np.sum((values - lo) ** 2)) / k
    up = math.sqrt(np.sum((hi - values) ** 2)) / k
    return mean - max(seeds, down), mean + max(seeds, up)


def separated(a: Sequence[float] | None, b: Sequence[float] | None) -> bool | None:
    """Whether two [lo, hi] intervals do not overlap; None when either is unknown."""
    if a is None or b is None or not all(math.isfinite(v) for v in (*a, *b)):
        return None
    return bool(a[0] > b[1] or a[1] < b[0])
