"""Scaling fits of a whole study, written to fits.json at full precision.

Per paradigm: every metric against training FLOPs, e(C) = E + A·C^-α in error form; the loss
surface L(N, D) by the Huber fit on log residuals (`estimators.fit_loss_law`), cross-checked by
variable projection, and the compute-optimal allocation it implies; isoFLOP parabolas and their
minima. Across paradigms: who wins each shared metric at each budget, where one paradigm's
fitted curve overtakes another's, and a verdict on each of the paper's findings (`claims`). Every parameter and prediction carries a bootstrap-over-runs
interval, every fit a held-out check (refit without the largest budget, predict it), and every
entry the name of its estimator. Fits the data cannot support are recorded with the reason
instead of a number.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from imgsynth.scaling import bootstrap as boot
from imgsynth.scaling import estimators as est
from imgsynth.scaling import claims, isoflop, replicates
from imgsynth import io
from imgsynth.scaling.table import PROMPT_CATEGORIES, WEIGHTS

PRIMARY_WEIGHTS = "ema"  # cross-paradigm findings use EMA weights, as evaluated in the paper
LOSS_COLUMNS = ("final/eval_loss", "raw/eval_loss")
HEADLINE = ("prompt_following/overall", "fd_judge", "alignment_score")  # findings, crossovers
# What a study on data without the judge (own data) measures in a headline metric's place, the
# first its runs have, in the order the findings use (claims.PROMPT_METRICS, QUALITY_METRICS):
# label following for prompt following; Inception FID (weights given), else fd_align, for the FD
# on judge features.
SUBSTITUTES = {family[0][0]: tuple(m[0] for m in family[1:])
               for family in (claims.PROMPT_METRICS, claims.QUALITY_METRICS)}


@dataclasses.dataclass(frozen=True)
class Metric:
    """A fitted quantity: its table column and how it is turned into a decreasing error."""
    column: str
    label: str
    higher_is_better: bool = False
    upper: float | None = None  # bound M of the error transform e = M − y
    delta: float = 0.05  # Huber delta on log residuals ≈ sampling noise of a 256-sample metric

    @property
    def transform(self) -> str:
        return f"{self.upper:g} - y" if self.higher_is_better else "y"

    def to_error(self, y):
        return self.upper - np.asarray(y, float) if self.higher_is_better else np.asarray(y, float)

    def from_error(self, e):
        return self.to_error(e)  # both transforms are involutions


def _measured(runs, name: str) -> bool:
    return any(np.isfinite(r.get(f"{w}/{name}", np.nan)) for r in runs for w in WEIGHTS)


def headline_names(runs) -> list[str]:
    """Per headline metric, the one the runs measure: itself, else its first measured
    `SUBSTITUTES` (itself when none is)."""
    return [next((m for m in (h, *SUBSTITUTES.get(h, ())) if _measured(runs, m)), h)
            for h in HEADLINE]


def study_metrics(loss_delta: float = est.LOSS_HUBER_DELTA, runs=()) -> list[Metric]:
    """Headline metrics for raw and EMA weights (`headline_names` of `runs`), prompt-following
    categories for the primary weights, and the end-of-training eval loss (fitted with the Huber
    delta of L(N, D))."""
    out = []
    names = headline_names(runs)
    for w in WEIGHTS:
        out += [Metric(f"{w}/prompt_following/overall", f"prompt following, overall ({w})",
                       True, 1.0),
                Metric(f"{w}/fd_judge", f"FD on judge features ({w})"),
                Metric(f"{w}/alignment_score", f"alignment score ({w})", True, 100.0)]
        out += [Metric(f"{w}/{n}", f"{label} ({w})", *bound) for n, label, bound in (
            ("label_following", "label following", (True, 1.0)),
            ("inception_fid", "Inception FID", ()), ("fd_align", "FD on alignment features", ()))
            if n in names]
    out += [Metric(f"{PRIMARY_WEIGHTS}/prompt_following/{c}",
                   f"prompt following, {c.replace('_', ' ')} ({PRIMARY_WEIGHTS})", True, 1.0)
            for c in PROMPT_CATEGORIES[1:]]
    out.append(Metric("final/eval_loss", "eval loss at the end of training",
                      delta=loss_delta))
    return out


def main_runs(rows: Sequence[dict]) -> list[dict]:
    """Finished main-grid runs (no ablation) with a known training compute."""
    return [r for r in rows if r["status"] == "done" and not r["ablation"] and r["paradigm"]
            and np.isfinite(r["train_flops"]) and r["train_flops"] > 0]


def budget_of(row: dict) -> float:
    """Nominal grid budget, or the run's training FLOPs when it was not launched from a grid."""
    return row["budget"] if np.isfinite(row["budget"]) else row["train_flops"]


def default_budgets(max_flops: float) -> list[float]:
    """10× and 100× the largest training compute observed, at two significant digits."""
    return [float(f"{max_flops * m:.2g}") for m in (10, 100)]


def _rng(seed: int, *key) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode())])


def _caught(fn, *args, **kwargs):
    """Runs a fit, returning (result, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def _same_budget(groups: np.ndarray, value: float) -> np.ndarray:
    return np.abs(np.log(groups / value)) <= math.log1p(est.DISTINCT_RTOL)


def budget_groups(runs) -> list[tuple[float, list[dict]]]:
    """Runs grouped by budget, ascending: nominal budgets within `est.DISTINCT_RTOL` are one
    budget; runs without one are clustered by training FLOPs (`isoflop.cluster_log_flops`)."""
    labelled = [r for r in runs if np.isfinite(r["budget"])]
    free = [r for r in runs if not np.isfinite(r["budget"])]
    out = []
    for sel, cluster in ((labelled, est.cluster_ids), (free, isoflop.cluster_log_flops)):
        if sel:
            values = np.array([budget_of(r) for r in sel])
            labels = cluster(values)
            out += [(float(np.median(values[labels == i])),
                     [r for r, j in zip(sel, labels) if j == i]) for i in np.unique(labels)]
    return sorted(out, key=lambda g: g[0])


def _budgets_of(runs) -> np.ndarray:
    """The budget of each run's `budget_groups` group, in the order of `runs`."""
    budget = {id(r): b for b, group in budget_groups(runs) for r in group}
    return np.array([budget[id(r)] for r in runs])


def _compute_points(runs, metric: Metric):
    pts = [(r["train_flops"], r[metric.column], b, r["run"])
           for r, b in zip(runs, _budgets_of(runs))]
    finite = [p for p in pts if np.isfinite(p[1])]
    notes = []
    if len(finite) < len(pts):
        notes.append(f"{len(pts) - len(finite)} run(s) without a value for {metric.column} "
                     "left out")
    usable = [p for p in finite if metric.to_error(p[1]) > 0]
    if len(usable) < len(finite):
        notes.append(f"{len(finite) - len(usable)} run(s) at or beyond the bound {metric.upper} "
                     f"(error {metric.transform} ≤ 0) left out")
    C, y, groups = (np.array([p[i] for p in usable], float) for i in range(3))
    return C, y, groups, [p[3] for p in usable], notes


def _heldout_compute(C, err, groups, names, metric) -> dict:
    if len(C) == 0:
        return {"error": "no points"}
    largest = float(groups.max())
    test = _same_budget(groups, largest)
    out: dict[str, Any] = {"budget": largest, "n_train": int((~test).sum()),
                           "n_test": int(test.sum())}
    try:
        law, _ = _caught(est.fit_compute_law, C[~test], err[~test], delta=metric.delta)
    except est.FitError as e:
        return {**out, "error": f"refit without the largest budget refused: {e}"}
    pred, obs = metric.from_error(law(C[test])), metric.from_error(err[test])
    nonzero = obs != 0   # a metric observed as exactly 0 (no prompt satisfied) has no relative error
    if not nonzero.any():
        return {**out, "error": "every held-out observation is 0: relative error undefined"}
    rel = np.abs(pred[nonzero] - obs[nonzero]) / np.abs(obs[nonzero])
    out.update(mean_abs_rel_error=float(rel.mean()), n_zero_observed=int((~nonzero).sum()),
               params=law.params(), points=[
        {"run": names[i], "flops": float(C[i]), "observed": float(o), "predicted": float(p)}
        for i, o, p in zip(np.flatnonzero(test), obs, pred)])
    return out


def fit_compute_metric(runs, metric: Metric, *, budgets, n_bootstrap: int, seed: int,
                       key: str) -> tuple[dict, np.ndarray | None]:
    """e(C) = E + A·C^-α for one paradigm and metric; returns (fits.json entry, bootstrap
    parameters (B, 3) or None)."""
    C, y, groups, names, notes = _compute_points(runs, metric)
    entry: dict[str, Any] = {
        "metric": metric.column, "label": metric.label, "transform": metric.transform,
        "estimator": est.compute_law_estimator(metric.delta),
        "higher_is_better": metric.higher_is_better, "form": "e(C) = E + A*C^-alpha",
        "n_points": len(C), "runs": names, "warnings": notes}
    err = metric.to_error(y)
    try:
        law, msgs = _caught(est.fit_compute_law, C, err, delta=metric.delta)
    except est.FitError as e:
        entry["error"] = str(e)
        return entry, None
    entry["warnings"] += msgs
    params = boot.bootstrap_compute_law(C, err, law, n_boot=n_bootstrap, seed=_rng(seed, key),
                                        delta=metric.delta)
    n_ok = int(np.isfinite(params[:, 0]).sum())
    entry["params"] = law.params()
    entry["ci95"] = {k: boot.ci(params[:, i]) for i, k in enumerate(("E", "A", "alpha"))}
    entry["bootstrap"] = {"requested": n_bootstrap, "ok": n_ok}
    if n_ok < boot.MIN_OK_FRACTION * n_bootstrap:
        entry["warnings"].append(f"only {n_ok}/{n_bootstrap} resamples could be refitted; "
                                 "no intervals")
    lo = C.min() / 1.5
    hi = max(C.max() * 1.5, max(budgets) * 1.2)
    grid = np.geomspace(lo, hi, 80)
    entry["predictions"] = [_prediction(metric, law, params, b) for b in budgets]
    band = boot.interval(_boot_errors(params, grid))
    if band is not None:
        band = np.sort(metric.from_error(band), axis=0)  # the transform may reverse the order
    entry["curve"] = {"flops": grid.tolist(), "value": metric.from_error(law(grid)).tolist(),
                      "lo": None if band is None else band[0].tolist(),
                      "hi": None if band is None else band[1].tolist()}
    entry["heldout"] = _heldout_compute(C, err, groups, names, metric)
    return entry, params


def _boot_errors(params: np.ndarray, flops) -> np.ndarray:
    """Error-form predictions (B, len(flops)) of resampled laws."""
    E, A, alpha = (params[:, i, None] for i in range(3))
    return E + np.exp(np.log(A) - alpha * np.log(np.asarray(flops, float)))


def _prediction(metric, law, params, flops) -> dict:
    iv = boot.interval(_boot_errors(params, [flops])[:, 0])
    ci = None if iv is None else sorted(float(v) for v in metric.from_error(iv))
    return {"flops": float(flops), "value": float(metric.from_error(law(flops))), "ci95": ci}


def _loss_column(runs) -> str | None:
    counts = {c: sum(np.isfinite(r[c]) for r in runs) for c in LOSS_COLUMNS}
    best = max(LOSS_COLUMNS, key=lambda c: counts[c])
    return best if counts[best] else None


LAW_NAMES = ("E", "A", "alpha", "B", "beta")


def loss_law_fit(N, D, L, *, n_bootstrap: int, seed: boot.Seed,
                 delta: float = est.LOSS_HUBER_DELTA) -> tuple[dict, est.LossLaw, np.ndarray]:
    """The default L(N, D) estimate (`est.fit_loss_law`), its bootstrap with the same estimator,
    and the variable-projection cross-check. Returns (entry, law, resampled (B, 5)); the entry
    holds `estimator`, `params`, `a`, `b` and, for all seven, `ci95` and `se`."""
    vp, msgs = _caught(est.fit_loss_law_vp, N, D, L)
    law, msgs2 = _caught(est.fit_loss_law, N, D, L, delta=delta, init=vp)
    agreement = est.compare_loss_laws(law, vp, N, D)
    agreement["agree"] = bool(agreement["max_rel_diff_on_data"] < 0.01
                              and not agreement["a_diff"] > 0.05)
    warns = msgs2 + [f"cross-check: {m}" for m in msgs]
    if not agreement["agree"]:
        warns.append("the Huber fit and its variable-projection cross-check disagree: the loss "
                     "surface is poorly determined by these points (the Huber fit is reported)")
    params = boot.bootstrap_loss_law(N, D, L, n_boot=n_bootstrap, seed=seed, law=law,
                                     delta=delta) if n_bootstrap else np.full((0, 5), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = dict(zip(LAW_NAMES, params.T))
        samples["a"] = samples["beta"] / (samples["alpha"] + samples["beta"])
        samples["b"] = samples["alpha"] / (samples["alpha"] + samples["beta"])
    s = law.alpha + law.beta
    entry = {"estimator": est.loss_law_estimator(delta), "params": law.params(),
             "a": law.beta / s, "b": law.alpha / s,
             "ci95": {k: boot.ci(v) if n_bootstrap else None for k, v in samples.items()},
             "se": {k: boot.se(v) if n_bootstrap else None for k, v in samples.items()},
             "bootstrap": {"requested": n_bootstrap, "ok": int(np.isfinite(params[:, 0]).sum())},
             "cross_check": {"estimator": est.VP_ESTIMATOR, "params": vp.params(), **agreement},
             "warnings": warns}
    return entry, law, params


def fit_loss_surface(runs, *, budgets, n_bootstrap: int, seed: int, key: str,
                     delta: float = est.LOSS_HUBER_DELTA) -> dict:
    """L(N, D) with N = non-embedding parameters and D = examples seen, its compute-optimal
    allocation with k = median C/(N·D), and the held-out check; all by the default estimator."""
    column = _loss_column(runs)
    if column is None:
        return {"error": "no eval loss in any run"}
    pts = [r for r in runs if all(np.isfinite(r[c]) and r[c] > 0 for c in (
        column, "params_non_embedding", "examples_seen"))]
    N, D, L, C = (np.array([r[c] for r in pts], float) for c in (
        "params_non_embedding", "examples_seen", column, "train_flops"))
    entry: dict[str, Any] = {"loss": column, "form": "L(N, D) = E + A/N^alpha + B/D^beta",
                             "estimator": est.loss_law_estimator(delta), "n_points": len(pts),
                             "runs": [r["run"] for r in pts], "warnings": []}
    if len(pts) < len(runs):
        entry["warnings"].append(f"{len(runs) - len(pts)} run(s) without N, D or {column} "
                                 "left out")
    try:
        fit, law, params = loss_law_fit(N, D, L, n_bootstrap=n_bootstrap, seed=_rng(seed, key),
                                        delta=delta)
    except est.FitError as e:
        entry["error"] = str(e)
        return entry
    entry["warnings"] += fit.pop("warnings")
    k = float(np.median(C / (N * D)))
    entry.update(fit, k_flops_per_param_example=k)
    entry["compute_optimal"] = compute_optimal(law, params, k, C, budgets)
    entry["heldout"] = _heldout_loss(N, D, L, _budgets_of(pts), delta)
    return entry


def compute_optimal(law: est.LossLaw, params: np.ndarray, k: float, C, budgets) -> dict:
    """N*(C), D*(C) of the fitted L(N, D) at C = k·N·D, with intervals from the resampled laws."""
    try:
        opt = law.compute_optimal(k)
    except est.FitError as e:
        return {"error": str(e)}
    _, A, alpha, B, beta = params.T
    with np.errstate(divide="ignore", invalid="ignore"):  # resamples whose N or D term vanished
        a, b = beta / (alpha + beta), alpha / (alpha + beta)
        G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))

    def n_opt(flops):
        return G[:, None] * (np.atleast_1d(flops)[None] / k) ** a[:, None]

    def d_opt(flops):
        with np.errstate(divide="ignore"):   # N* = 0 in those resamples: D* infinite, left out
            return flops / (k * n_opt(flops)[:, 0])

    grid = np.geomspace(np.min(C) / 1.5, max([np.max(C) * 1.5, *(b * 1.2 for b in budgets)]), 60)
    band = boot.interval(n_opt(grid))
    return {
        "form": "N*(C) = G*(C/k)^a, D*(C) = (C/k)^b / G", "a": opt.a, "b": opt.b, "G": opt.G,
        "estimator": "allocation minimising the fitted L(N, D) at C = k*N*D",
        "ci95": {"a": boot.ci(a), "b": boot.ci(b)},
        "predictions": [{"flops": float(c), "n_opt": float(opt.n_opt(c)),
                         "d_opt": float(opt.d_opt(c)), "n_opt_ci95": boot.ci(n_opt(c)[:, 0]),
                         "d_opt_ci95": boot.ci(d_opt(c))} for c in budgets],
        "curve": {"flops": grid.tolist(), "n_opt": opt.n_opt(grid).tolist(),
                  "lo": None if band is None else band[0].tolist(),
                  "hi": None if band is None else band[1].tolist()}}


def _heldout_loss(N, D, L, groups, delta: float) -> dict:
    test = _same_budget(groups, groups.max())
    out = {"budget": float(groups.max()), "n_train": int((~test).sum()), "n_test": int(test.sum()),
           "estimator": est.loss_law_estimator(delta)}
    try:
        held, _ = _caught(est.fit_loss_law, N[~test], D[~test], L[~test], delta=delta)
    except est.FitError as e:
        return {**out, "error": f"refit without the largest budget refused: {e}"}
    out["mean_abs_rel_error"] = float(np.mean(np.abs(held(N[test], D[test]) / L[test] - 1)))
    return out


def fit_isoflops(runs, *, n_bootstrap: int, seed: int, key: str) -> dict:
    """Per budget (nominal labels, or clustered training FLOPs for runs without one), a
    parabola of loss in ln N and its minimum; then N*(C) ∝ C^a through the minima."""
    column = _loss_column(runs)
    if column is None:
        return {"error": "no eval loss in any run", "budgets": []}
    pts = [r for r in runs if np.isfinite(r[column]) and np.isfinite(r["params_non_embedding"])]
    groups = budget_groups(pts)
    sel = [r for _, rs in groups for r in rs]
    labels = [i for i, (_, rs) in enumerate(groups) for _ in rs]
    out = isoflop.analyse([b for b, rs in groups for _ in rs],
                          [r["params_non_embedding"] for r in sel], [r[column] for r in sel],
                          groups=labels, n_bootstrap=n_bootstrap, seed=_rng(seed, key))
    return {"loss": column, **out}


def _first_crossing(d: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per row of d (challenger error − leader error on `grid`), the first budget at which the
    challenger is ahead (d ≤ 0), linearly interpolated in ln C; NaN when never."""
    ahead = d <= 0
    idx = np.argmax(ahead, axis=1)
    out = np.full(len(d), np.nan)
    hit = ahead.any(axis=1)
    at_start = hit & (idx == 0)
    out[at_start] = grid[0]
    mid = hit & (idx > 0)
    i = idx[mid]
    rows = np.flatnonzero(mid)
    d0, d1 = d[rows, i - 1], d[rows, i]
    t = d0 / (d0 - d1)
    lg = np.log(grid)
    out[mid] = np.exp(lg[i - 1] + t * (lg[i] - lg[i - 1]))
    return out


def crossover(laws: dict[str, est.ComputeLaw], boots: dict[str, np.ndarray], lo: float,
              hi: float, n_grid: int = 600) -> dict:
    """Where, in [lo, hi] FLOPs, the paradigm behind at `lo` (the challenger) first draws level
    with or ahead of the leader, on two error-form fits; with the bootstrap distribution of that
    budget over paired resamples. 'no crossover in range' when the fitted curves never cross."""
    (p, law_p), (q, law_q) = sorted(laws.items())
    grid = np.geomspace(lo, hi, n_grid)
    leader, challenger = (p, q) if law_p(lo) <= law_q(lo) else (q, p)
    diff = laws[challenger](grid) - laws[leader](grid)
    out: dict[str, Any] = {"leader": leader, "challenger": challenger, "range": [lo, hi]}
    d_boot = _boot_errors(boots[challenger], grid) - _boot_errors(boots[leader], grid)
    valid = np.all(np.isfinite(d_boot), axis=1)
    cross = _first_crossing(d_boot[valid], grid)
    out["fraction_of_resamples_crossing"] = (float(np.mean(np.isfinite(cross))) if valid.any()
                                             else None)
    if not np.any(diff <= 0):
        out.update(status="no crossover in range", flops=None, ci95=None)
        return out
    i = int(np.argmax(diff <= 0))

    def gap(log_flops):
        return float(laws[challenger](math.exp(log_flops)) - laws[leader](math.exp(log_flops)))

    flops = lo if i == 0 else math.exp(optimize.brentq(gap, math.log(grid[i - 1]),
                                                       math.log(grid[i])))
    ci = boot.interval(cross[np.isfinite(cross)]) if np.isfinite(cross).sum() >= 10 else None
    out.update(status="crossover", flops=flops,
               ci95=None if ci is None else [float(ci[0]), float(ci[1])],
               final_leader=challenger if diff[-1] <= 0 else leader,
               n_crossings=int(np.sum(np.diff(np.sign(diff)) != 0)))
    return out


def headline_metrics(runs, metrics, weights: str) -> list[Metric]:
    """The headline shared metrics for `weights`, falling back to raw weights per metric when no
    run has the requested ones (e.g. EMA off)."""
    out = []
    for name in headline_names(runs):
        cols = [f"{weights}/{name}", f"raw/{name}"]
        col = next((c for c in cols if any(np.isfinite(r[c]) for r in runs)), cols[0])
        out.append(next(m for m in metrics if m.column == col))
    return out


def _findings(runs, compute_fits, metrics, budgets) -> list[dict]:
    """Per headline metric of the primary weights and per budget: who is ahead, observed (best
    configuration of each paradigm at that budget, seed replicates averaged) or extrapolated
    (fitted prediction). A lead is 'clear' only when the leader's 95% interval and the runner-up's
    do not overlap (evaluation intervals, across seeds where replicated; bootstrap over runs for
    predictions); unknown when either has none."""
    rows = []
    configs = replicates.aggregate(runs)
    for m in headline_metrics(runs, metrics, PRIMARY_WEIGHTS):
        pick = max if m.higher_is_better else min
        for b, group in budget_groups([r for r in configs if np.isfinite(r[m.column])]):
            best: dict[str, dict] = {}
            for r in group:
                p = r["paradigm"]
                best[p] = r if p not in best else pick(best[p], r, key=lambda x: x[m.column])
            if len(best) < 2:
                continue
            values = {p: r[m.column] for p, r in best.items()}
            ci = {p: [r.get(f"{m.column}_lo", math.nan), r.get(f"{m.column}_hi", math.nan)]
                  for p, r in best.items()}
            ci = {p: v if all(math.isfinite(x) for x in v) else None for p, v in ci.items()}
            ranked = sorted(values, key=values.get, reverse=m.higher_is_better)
            rows.append({"metric": m.column, "label": m.label, "budget": b, "kind": "observed",
                         "winner": ranked[0], "values": values, "ci95": ci,
                         "runs": {p: r["run"] for p, r in best.items()},
                         "seeds": {p: r["n_seeds"] for p, r in best.items()},
                         "clear": replicates.separated(ci[ranked[0]], ci[ranked[1]])})
        fits = {p: f[m.column] for p, f in compute_fits.items() if "params" in f.get(m.column, {})}
        if len(fits) < 2:
            continue
        for i, b in enumerate(budgets):
            preds = {p: f["predictions"][i] for p, f in fits.items()}
            values = {p: x["value"] for p, x in preds.items()}
            ranked = sorted(values, key=values.get, reverse=m.higher_is_better)
            clear = replicates.separated(preds[ranked[0]]["ci95"], preds[ranked[1]]["ci95"])
            rows.append({"metric": m.column, "label": m.label, "budget": float(b),
                         "kind": "extrapolated", "winner": ranked[0], "values": values,
                         "ci95": {p: x["ci95"] for p, x in preds.items()}, "clear": clear})
    return rows


def fit_study(rows: Sequence[dict], *, budgets: Sequence[float] | None = None,
              n_bootstrap: int = 1000, seed: int = 0,
              loss_delta: float = est.LOSS_HUBER_DELTA) -> dict:
    """All fits of a study from the results table (`table.collect(...).rows`). `loss_delta` is
    the Huber delta of every fit of a loss (L(N, D) and the eval loss against compute)."""
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    runs = main_runs(rows)
    if not runs:
        raise est.FitError("no finished main-grid runs with training FLOPs: nothing to fit")
    max_flops = max(r["train_flops"] for r in runs)
    budgets = sorted(float(b) for b in budgets) if budgets else default_budgets(max_flops)
    if any(not (b > 0 and math.isfinite(b)) for b in budgets):
        raise ValueError(f"budgets must be positive FLOP counts, got {budgets}")
    paradigms = sorted({r["paradigm"] for r in runs})
    metrics = study_metrics(loss_delta, runs)
    compute_fits: dict[str, dict] = {}
    boots: dict[tuple[str, str], np.ndarray] = {}
    loss_fits, isoflops = {}, {}
    for p in paradigms:
        pruns = [r for r in runs if r["paradigm"] == p]
        compute_fits[p] = {}
        for m in metrics:
            entry, params = fit_compute_metric(pruns, m, budgets=budgets, n_bootstrap=n_bootstrap,
                                               seed=seed, key=f"{p}:{m.column}")
            compute_fits[p][m.column] = entry
            if params is not None:
                boots[p, m.column] = params
        loss_fits[p] = fit_loss_surface(pruns, budgets=budgets, n_bootstrap=n_bootstrap, seed=seed,
                                        key=f"{p}:loss", delta=loss_delta)
        isoflops[p] = fit_isoflops(pruns, n_bootstrap=n_bootstrap, seed=seed, key=f"{p}:isoflop")

    lo, hi = min(r["train_flops"] for r in runs), max(budgets + [max_flops])
    crossovers, headline = [], headline_names(runs)
    for m in [m for m in metrics if m.column.split("/", 1)[1] in headline]:
        for p, q in itertools.combinations(paradigms, 2):
            if (p, m.column) not in boots or (q, m.column) not in boots:
                continue
            laws = {x: est.ComputeLaw(**compute_fits[x][m.column]["params"]) for x in (p, q)}
            result = crossover(laws, {x: boots[x, m.column] for x in (p, q)}, lo, hi)
            crossovers.append({"metric": m.column, "label": m.label,
                               "estimator": est.compute_law_estimator(m.delta), **result,
                               "within_data": bool(result["flops"] is not None
                                                   and result["flops"] <= max_flops)})
    out = {
        "meta": {"n_bootstrap": n_bootstrap, "seed": seed, "budgets": budgets,
                 "ci_level": boot.CI_LEVEL, "primary_weights": PRIMARY_WEIGHTS,
                 "paradigms": paradigms, "n_runs": len(runs), "max_observed_flops": max_flops,
                 "crossover_range": [lo, hi], "estimators": {
                     "loss_law": est.loss_law_estimator(loss_delta),
                     "loss_law_cross_check": est.VP_ESTIMATOR,
                     "compute_law": {m.column: est.compute_law_estimator(m.delta)
                                     for m in metrics},
                     "isoflop": isoflop.ESTIMATOR,
                     "intervals": "percentile bootstrap over runs, each resample refitted with "
                                  "the estimator of the point estimate"}},
        "metrics": [dataclasses.asdict(m) | {"transform": m.transform} for m in metrics],
        "compute_fits": compute_fits, "loss_fits": loss_fits, "isoflop": isoflops,
        "crossovers": crossovers,
        "findings": _findings(runs, compute_fits, metrics, budgets)}
    out["claims"] = claims.check(runs, out)   # the paper's findings, each with a verdict
    return out


def jsonable(obj):
    """`obj` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_fits(fits: dict, path: str) -> str:
    """fits.json: floats at full precision (shortest round-trip repr), non-finite as null."""
    io.atomic_write(path, json.dumps(jsonable(fits), indent=1, allow_nan=False))
    return path
