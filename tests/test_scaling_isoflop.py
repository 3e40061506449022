"""isoFLOP analysis without budget labels: budgets found by clustering jittered FLOPs, parabolas
per budget, and the frontier through their minima."""
import numpy as np
import pytest

from imgsynth.scaling import estimators as est
from imgsynth.scaling import isoflop

TRUE = est.LossLaw(E=1.8, A=480.0, alpha=0.34, B=2100.0, beta=0.37)
BUDGETS = np.geomspace(1e18, 1e21, 7)   # ×3.2 apart, as isoFLOP grids are


def jittered(seed, jitter=0.10, sizes=7):
    """Runs of each budget around its compute-optimal size, FLOPs off by up to ±`jitter`."""
    rng = np.random.default_rng(seed)
    opt = TRUE.compute_optimal(6.0)
    C, N = [], []
    for b in BUDGETS:
        n = opt.n_opt(b) * np.geomspace(0.2, 5, sizes)
        C += list(b * np.exp(rng.uniform(-jitter, jitter, sizes)))
        N += list(n)
    C, N = np.array(C), np.array(N)
    return C, N, TRUE(N, C / (6 * N)) * np.exp(rng.normal(0, 0.002, C.size))


@pytest.mark.parametrize("seed", range(4))
def test_clustering_finds_each_budget_of_jittered_flops(seed):
    C, _, _ = jittered(seed)
    labels = isoflop.cluster_log_flops(C)
    assert labels.max() + 1 == len(BUDGETS)
    truth = np.repeat(np.arange(len(BUDGETS)), 7)
    assert all(len(set(labels[truth == i])) == 1 for i in range(len(BUDGETS)))
    assert est.distinct_count(C) > 3 * len(BUDGETS)   # a 2% tolerance splits them into many


def test_analysis_without_labels_recovers_frontier_exponent():
    C, N, L = jittered(0)
    out = isoflop.analyse(C, N, L, n_bootstrap=50, seed=0)
    assert out["grouping"].startswith("clustered")
    assert len(out["budgets"]) == len(BUDGETS) and all("n_opt" in b for b in out["budgets"])
    assert out["frontier"]["a"] == pytest.approx(TRUE.compute_optimal(6.0).a, abs=0.03)
    lo, hi = out["frontier"]["a_ci95"]
    assert lo <= out["frontier"]["a"] <= hi


def test_labels_and_minimum_sizes():
    C, N, L = jittered(1)
    labels = np.repeat([f"b{i}" for i in range(len(BUDGETS))], 7)
    keep = np.ones(C.size, bool)
    keep[:5] = False   # the first budget keeps 2 sizes
    out = isoflop.analyse(C[keep], N[keep], L[keep], groups=labels[keep], n_bootstrap=20,
                          min_sizes=4)
    assert out["grouping"] == "labels" and len(out["budgets"]) == len(BUDGETS)
    assert "fewer than the 4 required" in out["budgets"][0]["error"]
    assert out["frontier"]["n_budgets"] == len(BUDGETS) - 1
