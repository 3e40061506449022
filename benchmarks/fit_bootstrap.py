"""Bootstrap of the default L(N, D) fit: wall and CPU time of 1,000 resamples of ~250 points.

    python benchmarks/fit_bootstrap.py [--n_boot=1000] [--points=250] [--seed=0]

The table is synthetic and Chinchilla-like (E = 1.8, A = 480, α = 0.34, B = 2100, β = 0.37;
10 budgets 1e18–1e21 with ±10% FLOP jitter, 25 sizes each, 1% Student-t log-noise). The point
fit is timed separately; every resample is refitted with the same estimator (Huber on log
residuals, L-BFGS-B). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgsynth.scaling import bootstrap as boot  # noqa: E402
from imgsynth.scaling import estimators as est  # noqa: E402

TRUE = est.LossLaw(E=1.8, A=480.0, alpha=0.34, B=2100.0, beta=0.37)


def table(points: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    budgets = np.geomspace(1e18, 1e21, 10)
    C = np.repeat(budgets, -(-points // 10))[:points] * np.exp(rng.uniform(-0.1, 0.1, points))
    N = np.geomspace(3e7, 3e10, points)[rng.permutation(points)]
    D = C / (6 * N)
    return N, D, TRUE(N, D) * np.exp(0.01 * rng.standard_t(3, points))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--points", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    N, D, L = table(args.points, args.seed)
    wall, cpu = time.perf_counter(), _cpu()
    law = est.fit_loss_law(N, D, L)
    fit_s, fit_cpu = time.perf_counter() - wall, _cpu() - cpu
    wall, cpu = time.perf_counter(), _cpu()
    params = boot.bootstrap_loss_law(N, D, L, n_boot=args.n_boot, seed=args.seed, law=law)
    boot_s, boot_cpu = time.perf_counter() - wall, _cpu() - cpu
    ok = np.isfinite(params[:, 2])
    result = {"bootstrap_s": boot_s, "bootstrap_cpu_s": boot_cpu, "n_boot": args.n_boot,
              "n_points": args.points, "n_ok": int(ok.sum()), "fit_s": fit_s, "fit_cpu_s": fit_cpu,
              "alpha": law.alpha, "beta": law.beta, "alpha_se": float(np.std(params[ok, 2])),
              "beta_se": float(np.std(params[ok, 4])), "load_1min": os.getloadavg()[0]}
    for k, v in result.items():
        print(f"{k:<16} {v:.4g}" if isinstance(v, float) else f"{k:<16} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
