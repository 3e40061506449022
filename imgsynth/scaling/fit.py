"""Fits L(N, D) = E + A/N^α + B/D^β to any table of model size, data and loss, with bootstrap
intervals, and the isoFLOP frontier; the same estimators as the study report.

    python -m imgsynth.scaling.fit --csv=FILE --n=COL (--d=COL | --c=COL [--c_factor=6])
        --loss=COL [--group=COL] [--drop_highest=K] [--bootstrap=1000] [--seed=0]
        [--delta=1e-3] [--json] [--figures=DIR]

With --c, D = C/(c_factor·N); with --d, C = c_factor·N·D. Column names may contain spaces.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from imgsynth.scaling import estimators as est
from imgsynth.scaling import figures, fits, isoflop

PARAMS = ("E", "A", "B", "alpha", "beta", "a", "b")
JSON_KEYS = (*PARAMS, "estimator", "n_points", "ci", "se")


class TableError(ValueError):
    """The table cannot be fitted; the one-line message names the column and the row count."""


@dataclasses.dataclass(frozen=True)
class Table:
    """One row per run: N, D, loss and compute C = c_factor·N·D; `groups` are budget labels (or
    None: budgets are clustered from C); `names` the columns the arrays came from."""
    N: np.ndarray
    D: np.ndarray
    L: np.ndarray
    C: np.ndarray
    c_factor: float
    groups: np.ndarray | None = None
    names: dict[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.L)


def _check(name: str, values: np.ndarray) -> None:
    n = len(values)
    for bad, what in ((~np.isfinite(values), "missing or not finite"),
                      (np.isfinite(values) & (values <= 0), "<= 0 (the fit takes logarithms)")):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise TableError(f"column {name!r}: {int(bad.sum())} of {n} rows are {what} "
                             f"(first: row {first + 1}, value {values[first]!r})")


def make_table(N, L, *, D=None, C=None, c_factor: float = 6.0, groups=None,
               names: dict[str, str] | None = None) -> Table:
    """A validated table from arrays: exactly one of D or C (then D = C/(c_factor·N)).
    `names` maps 'N', 'D', 'C', 'loss' to the column names used in error messages."""
    names = {"N": "N", "D": "D", "C": "C", "loss": "loss", **(names or {})}
    if (D is None) == (C is None):
        raise TableError("give exactly one of D (examples or tokens) or C (training FLOPs)")
    if not (c_factor > 0 and math.isfinite(c_factor)):
        raise TableError(f"c_factor must be a positive number, got {c_factor!r}")
    arrays = {"N": N, "loss": L, "D" if D is not None else "C": D if D is not None else C}
    arrays = {k: np.asarray(v, float).ravel() for k, v in arrays.items()}
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) > 1:
        raise TableError(f"columns have different lengths: {sorted(lengths)}")
    for key, values in arrays.items():
        _check(names[key], values)
    N, L = arrays["N"], arrays["loss"]
    D = arrays["D"] if "D" in arrays else arrays["C"] / (c_factor * N)
    C = arrays["C"] if "C" in arrays else c_factor * N * D
    if groups is not None:
        groups = np.asarray(groups)
        missing = np.array([g is None or str(g).strip() == "" for g in groups], bool)
        if len(groups) != len(N):
            raise TableError(f"{len(groups)} budget labels for {len(N)} rows")
        if missing.any():
            raise TableError(f"column {names.get('group', 'group')!r}: {int(missing.sum())} of "
                             f"{len(groups)} rows have no budget label")
    used = [*arrays, *(["group"] if groups is not None else [])]
    return Table(N, D, L, C, float(c_factor), groups, {k: names[k] for k in used if k in names})


def read_table(path: str, *, n: str, loss: str, d: str | None = None, c: str | None = None,
               c_factor: float = 6.0, group: str | None = None) -> Table:
    """Reads the named columns of a CSV file (header row; names may contain spaces)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"cannot read ({e})") from None
    if not rows:
        raise TableError("empty file (0 rows)")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(x.strip() for x in r)]
    wanted = {"N": n, "loss": loss, "D": d, "C": c, "group": group}
    index = {}
    for key, name in wanted.items():
        if name is None:
            continue
        if name.strip() not in header:
            raise TableError(f"no column {name!r} ({len(body)} rows; columns: "
                             f"{', '.join(repr(h) for h in header)})")
        index[key] = header.index(name.strip())

    def column(key: str) -> np.ndarray:
        i, out = index[key], np.full(len(body), np.nan)
        for j, row in enumerate(body):
            text = row[i].strip() if i < len(row) else ""
            try:
                out[j] = float(text) if text else np.nan
            except ValueError:
                raise TableError(f"column {wanted[key]!r}: row {j + 1} of {len(body)} is not a "
                                 f"number ({text!r})") from None
        return out

    groups = None
    if group is not None:
        groups = np.array([row[index["group"]].strip() if index["group"] < len(row) else ""
                           for row in body], dtype=object)
    return make_table(column("N"), column("loss"), D=column("D") if d else None,
                      C=column("C") if c else None, c_factor=c_factor, groups=groups,
                      names={k: v for k, v in wanted.items() if v is not None})


def drop_highest(table: Table, k: int) -> Table:
    """The table without its k highest losses (an outlier rule for runs that diverged)."""
    if k < 0:
        raise TableError(f"--drop_highest must be >= 0, got {k}")
    if k >= len(table):
        raise TableError(f"column {table.names['loss']!r}: dropping the {k} highest of "
                         f"{len(table)} rows leaves nothing to fit")
    keep = np.sort(np.argsort(table.L, kind="stable")[:len(table) - k])
    return dataclasses.replace(
        table, N=table.N[keep], D=table.D[keep], L=table.L[keep], C=table.C[keep],
        groups=None if table.groups is None else table.groups[keep])


def fit_table(table: Table, *, n_bootstrap: int = 1000, seed: int = 0,
              delta: float = est.LOSS_HUBER_DELTA, bandwidth_dex: float = isoflop.BANDWIDTH_DEX,
              min_sizes: int = isoflop.MIN_SIZES) -> dict[str, Any]:
    """Fits a table: L(N, D) by the default estimator with bootstrap intervals and its
    variable-projection cross-check, the compute-optimal allocation at C = c_factor·N·D, and
    the isoFLOP analysis (budgets from `table.groups`, else clustered). Returns a dict:
    `loss_law` (as a `fits.json` loss fit), `compute_optimal`, `isoflop`, `n_points`."""
    if n_bootstrap < 0:
        raise TableError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    if len(table) < 6:
        raise TableError(f"column {table.names['loss']!r}: {len(table)} rows, fewer than the 6 "
                         "an L(N, D) fit needs (5 parameters)")
    try:
        entry, law, params = fits.loss_law_fit(table.N, table.D, table.L,
                                               n_bootstrap=n_bootstrap, seed=seed, delta=delta)
    except est.FitError as e:
        columns = ", ".join(repr(table.names[k]) for k in ("N", "D", "C", "loss")
                            if k in table.names)
        raise TableError(f"columns {columns}, {len(table)} rows: {e}") from None
    return {"n_points": len(table), "c_factor": table.c_factor, "columns": table.names,
            "loss_law": entry,
            "compute_optimal": fits.compute_optimal(law, params, table.c_factor, table.C, []),
            "isoflop": isoflop.analyse(table.C, table.N, table.L, groups=table.groups,
                                       n_bootstrap=n_bootstrap, seed=seed,
                                       bandwidth_dex=bandwidth_dex, min_sizes=min_sizes)}


def json_summary(result: dict) -> dict[str, Any]:
    """The one-line summary: exactly `JSON_KEYS`; `ci` and `se` map each parameter to its 95%
    bootstrap interval and standard error (None without a bootstrap)."""
    e = result["loss_law"]
    values = {**e["params"], "a": e["a"], "b": e["b"]}
    return {**{k: values[k] for k in PARAMS}, "estimator": e["estimator"],
            "n_points": result["n_points"], "ci": {k: e["ci95"][k] for k in PARAMS},
            "se": {k: e["se"][k] for k in PARAMS}}


def _g(v, digits: int = 5) -> str:
    missing = v is None or (isinstance(v, float) and not math.isfinite(v))
    return "–" if missing else f"{v:.{digits}g}"


def format_result(result: dict, source: str) -> str:
    """The printed table."""
    e, s = result["loss_law"], json_summary(result)
    lines = [f"L(N, D) = E + A/N^alpha + B/D^beta: {result['n_points']} points from {source}",
             f"estimator: {e['estimator']}",
             f"bootstrap: {e['bootstrap']['ok']}/{e['bootstrap']['requested']} resamples refitted",
             "", f"{'param':<7}{'estimate':>13}{'95% CI':>28}{'SE':>12}"]
    for k in PARAMS:
        ci = s["ci"][k]
        interval = f"[{_g(ci[0])}, {_g(ci[1])}]" if ci else "–"
        lines.append(f"{k:<7}{_g(s[k]):>13}{interval:>28}{_g(s['se'][k], 3):>12}")
    cc = e["cross_check"]
    lines += ["", "a = beta/(alpha+beta) (N* ∝ C^a), b = alpha/(alpha+beta) (D* ∝ C^b)",
              f"cross-check, {cc['estimator']}: E={_g(cc['params']['E'])} "
              f"alpha={_g(cc['params']['alpha'])} beta={_g(cc['params']['beta'])}; "
              f"{'agrees' if cc['agree'] else 'DISAGREES'} (predictions within "
              f"{100 * cc['max_rel_diff_on_data']:.2f}%, |delta a| = {_g(cc['a_diff'], 2)})"]
    lines += [f"warning: {w}" for w in e["warnings"]]
    iso = result["isoflop"]
    ok = [b for b in iso["budgets"] if "n_opt" in b]
    lines += ["", f"isoFLOP budgets ({iso['grouping']}): {len(iso['budgets'])}, "
              f"{len(ok)} with a minimum",
              f"{'budget':>11}{'runs':>6}{'N*':>12}{'loss at N*':>12}  note"]
    for b in iso["budgets"]:
        lines.append(f"{_g(b['budget'], 3):>11}{len(b['n']):>6}{_g(b.get('n_opt'), 3):>12}"
                     f"{_g(b.get('loss_opt'), 4):>12}  {b.get('error', '')}")
    fr = iso.get("frontier")
    if fr and "a" in fr:
        ci = fr["a_ci95"]
        lines.append(f"frontier N* = K*C^a over {fr['n_budgets']} budgets: a = {_g(fr['a'], 4)}"
                     + (f" [{_g(ci[0], 4)}, {_g(ci[1], 4)}]" if ci else ""))
    elif fr:
        lines.append(f"frontier: {fr['error']}")
    return "\n".join(lines)


def write_figures(result: dict, table: Table, out_dir: str) -> list[str]:
    """loss_law.png, isoflop.png and frontier.png in `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    law = est.LossLaw(**result["loss_law"]["params"])
    name = table.names["loss"]
    study = {"meta": {"paradigms": [name], "budgets": []}, "isoflop": {name: result["isoflop"]},
             "loss_fits": {name: {"compute_optimal": result["compute_optimal"],
                                  "k_flops_per_param_example": table.c_factor}}}
    made = {"loss_law": figures.loss_law_figure(table.N, table.D, table.L, law,
                                                 result["loss_law"]["estimator"]),
            "isoflop": figures.isoflop_figure(study), "frontier": figures.frontier_figure(study)}
    paths = []
    for key, fig in made.items():
        if fig is not None:
            paths.append(os.path.join(out_dir, f"{key}.png"))
            figures.save_png(fig, paths[-1])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", required=True, help="table with a header row")
    parser.add_argument("--n", required=True, help="column of model sizes N (parameters)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--d", help="column of training data D (examples or tokens)")
    data.add_argument("--c", help="column of training compute C (FLOPs); D = C/(c_factor*N)")
    parser.add_argument("--c_factor", type=float, default=6.0,
                        help="FLOPs per parameter per example or token: C = c_factor*N*D")
    parser.add_argument("--loss", required=True, help="column of final losses")
    parser.add_argument("--group", help="column of isoFLOP budget labels (default: budgets "
                                        "clustered from C)")
    parser.add_argument("--drop_highest", type=int, default=0,
                        help="leave out the K highest losses")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--delta", type=float, default=est.LOSS_HUBER_DELTA,
                        help="Huber delta on log residuals")
    parser.add_argument("--bandwidth_dex", type=float, default=isoflop.BANDWIDTH_DEX,
                        help="budget clustering bandwidth in log10 FLOPs")
    parser.add_argument("--min_sizes", type=int, default=isoflop.MIN_SIZES,
                        help="distinct model sizes a budget needs for an isoFLOP parabola")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--figures", help="folder for loss_law.png, isoflop.png, frontier.png")
    args = parser.parse_args(argv)
    try:
        if not (args.delta > 0 and math.isfinite(args.delta)):
            raise TableError(f"--delta must be a positive number, got {args.delta}")
        table = read_table(args.csv, n=args.n, loss=args.loss, d=args.d, c=args.c,
                           c_factor=args.c_factor, group=args.group)
        table = drop_highest(table, args.drop_highest)
        result = fit_table(table, n_bootstrap=args.bootstrap, seed=args.seed, delta=args.delta,
                           bandwidth_dex=args.bandwidth_dex, min_sizes=args.min_sizes)
    except (TableError, est.FitError) as e:
        print(f"error: {args.csv}: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    source = args.csv + (f" (highest {args.drop_highest} losses dropped)" if args.drop_highest
                         else "")
    print(format_result(result, source))
    if args.figures:
        for path in write_figures(result, table, args.figures):
            print(f"wrote {path}")
    if args.json:
        print(json.dumps(fits.jsonable(json_summary(result)), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
