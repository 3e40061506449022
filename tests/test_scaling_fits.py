"""Study-level fits: crossovers, held-out check, findings and fits.json on a fabricated study."""
import json
import math

import numpy as np
import pytest
from scipy import optimize

from fixtures.scaling_workdir import LOSS_LAWS, make_workdir
from imgsynth.scaling import bootstrap as bs
from imgsynth.scaling import estimators as est
from imgsynth.scaling import fits, isoflop, table


def _boot(law, seed, n=200, noise=0.02):
    """Fits noisy samples of `law` and returns (fitted law, bootstrap parameters)."""
    C = np.geomspace(1e15, 1e17, 12)
    y = law(C) * np.exp(np.random.default_rng(seed).normal(0, noise, C.size))
    fitted = est.fit_compute_law(C, y)
    return fitted, bs.bootstrap_compute_law(C, y, fitted, n_boot=n, seed=seed)


def test_crossover_found_for_crossing_curves():
    slow = est.ComputeLaw(E=2.0, A=30.0 * 1e15 ** 0.15, alpha=0.15)  # ahead at small budgets
    fast = est.ComputeLaw(E=1.0, A=90.0 * 1e15 ** 0.35, alpha=0.35)  # improves faster
    (ls, bs_), (lf, bf) = _boot(slow, 0), _boot(fast, 1)
    res = fits.crossover({"slow": ls, "fast": lf}, {"slow": bs_, "fast": bf}, 1e15, 1e20)
    truth = math.exp(optimize.brentq(lambda u: fast(math.exp(u)) - slow(math.exp(u)),
                                     math.log(1e15), math.log(1e20)))
    assert res["status"] == "crossover"
    assert (res["leader"], res["challenger"]) == ("slow", "fast")
    assert res["flops"] == pytest.approx(truth, rel=0.5)
    lo, hi = res["ci95"]
    assert lo <= truth <= hi
    assert res["fraction_of_resamples_crossing"] > 0.8


def test_no_crossover_for_parallel_curves():
    a = est.ComputeLaw(E=1.0, A=10.0 * 1e15 ** 0.3, alpha=0.3)
    b = est.ComputeLaw(E=1.5, A=15.0 * 1e15 ** 0.3, alpha=0.3)
    (la, ba), (lb, bb) = _boot(a, 2, noise=0.005), _boot(b, 3, noise=0.005)
    res = fits.crossover({"a": la, "b": lb}, {"a": ba, "b": bb}, 1e15, 1e20)
    assert res["status"] == "no crossover in range"
    assert res["flops"] is None and res["leader"] == "a"
    assert res["fraction_of_resamples_crossing"] < 0.1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    workdir = make_workdir(str(tmp_path_factory.mktemp("study")))
    rows = table.collect(workdir).rows
    return rows, fits.fit_study(rows, budgets=[1e17, 1e18], n_bootstrap=100, seed=0)


def test_fit_study_structure_and_loss_surface(study):
    _, f = study
    assert f["meta"]["paradigms"] == ["ar", "flow", "maskgit"]
    assert f["meta"]["n_runs"] == 36 and f["meta"]["budgets"] == [1e17, 1e18]
    for p, (E, A, alpha, B, beta) in LOSS_LAWS.items():
        loss = f["loss_fits"][p]
        assert loss["cross_check"]["agree"], loss["cross_check"]
        assert loss["params"]["beta"] == pytest.approx(beta, abs=0.03)
        truth_a = beta / (alpha + beta)
        lo, hi = loss["compute_optimal"]["ci95"]["a"]
        assert lo - 0.02 <= truth_a <= hi + 0.02
        assert loss["heldout"]["mean_abs_rel_error"] < 0.02
        assert loss["k_flops_per_param_example"] == pytest.approx(6 * 64 * 1.1, rel=0.01)
        iso = f["isoflop"][p]
        assert len(iso["budgets"]) == 4 and all("n_opt" in b for b in iso["budgets"])
        assert 0.2 < iso["frontier"]["a"] < 0.8


def test_compute_fits_have_intervals_predictions_and_heldout(study):
    _, f = study
    e = f["compute_fits"]["flow"]["ema/fd_judge"]
    assert e["transform"] == "y" and e["n_points"] == 12
    for name in ("E", "A", "alpha"):
        lo, hi = e["ci95"][name]
        assert lo <= e["params"][name] <= hi
    assert [p["flops"] for p in e["predictions"]] == [1e17, 1e18]
    assert all(p["ci95"][0] <= p["value"] <= p["ci95"][1] for p in e["predictions"])
    assert e["heldout"]["budget"] == 3e16 and e["heldout"]["n_test"] == 3
    assert e["heldout"]["mean_abs_rel_error"] < 0.5
    pf = f["compute_fits"]["ar"]["ema/prompt_following/overall"]
    assert pf["transform"] == "1 - y" and pf["predictions"][1]["value"] < 1


def test_findings_and_crossovers(study):
    _, f = study
    observed = [x for x in f["findings"] if x["kind"] == "observed"
                and x["metric"] == "ema/prompt_following/overall"]
    assert len(observed) == 4 and all(x["winner"] == "ar" for x in observed)
    fd = [c for c in f["crossovers"] if c["metric"] == "ema/fd_judge"
          and {c["leader"], c["challenger"]} == {"ar", "flow"}]
    assert len(fd) == 1 and fd[0]["leader"] == "ar"
    assert fd[0]["status"] in ("crossover", "no crossover in range")


def test_fits_json_is_valid_and_exact(study, tmp_path):
    _, f = study
    path = fits.write_fits(f, str(tmp_path / "fits.json"))
    with open(path) as fh:
        text = fh.read()
    back = json.loads(text)  # strict: write_fits uses allow_nan=False
    assert "NaN" not in text and "Infinity" not in text
    p = f["compute_fits"]["ar"]["ema/alignment_score"]["params"]
    assert back["compute_fits"]["ar"]["ema/alignment_score"]["params"] == p
    assert back["loss_fits"]["flow"]["params"] == f["loss_fits"]["flow"]["params"]


def test_refusals_are_recorded_not_faked(study):
    rows, _ = study
    few = [r for r in fits.main_runs(rows) if r["budget"] <= 3e15]  # two budgets only
    f = fits.fit_study(few, n_bootstrap=20)
    assert "distinct compute values" in f["compute_fits"]["ar"]["ema/fd_judge"]["error"]
    assert "ci95" not in f["compute_fits"]["ar"]["ema/fd_judge"]
    with pytest.raises(est.FitError, match="no finished main-grid runs"):
        fits.fit_study([r for r in rows if r["status"] != "done"])
    with pytest.raises(ValueError, match="n_bootstrap"):
        fits.fit_study(rows, n_bootstrap=0)


def test_heldout_skips_observations_of_zero():
    """Prompt following can be exactly 0 at the largest budget: no infinite relative error."""
    metric = fits.Metric("ema/prompt_following/counting", "counting", True, 1.0)
    C = np.repeat([1e12, 2e12, 5e12, 1e13], 3)
    y = np.clip(1 - 0.9 * (C / 1e12) ** -0.3, 0, 1) * np.tile([1.0, 1.1, 0.9], 4)
    y[-3:] = [0.0, 0.4, 0.0]
    with np.errstate(all="raise"):
        out = fits._heldout_compute(C, metric.to_error(y), C, [f"r{i}" for i in range(12)], metric)
    assert out["n_zero_observed"] == 2 and math.isfinite(out["mean_abs_rel_error"])
    y[-3:] = 0.0
    out = fits._heldout_compute(C, metric.to_error(y), C, [f"r{i}" for i in range(12)], metric)
    assert "relative error undefined" in out["error"]


def test_intervals_leave_out_infinite_resamples():
    rng = np.random.default_rng(0)
    finite = rng.normal(10.0, 1.0, 200)
    with_inf = np.concatenate([finite, [np.inf] * 5, [np.nan] * 5])
    with np.errstate(invalid="raise"):                 # inf - inf inside a percentile would raise
        assert bs.ci(with_inf) == pytest.approx(bs.ci(finite))
    assert bs.ci(np.full(50, np.inf)) is None       # too few finite resamples: no interval


def test_every_fit_names_its_estimator(study):
    _, f = study
    loss_law = est.loss_law_estimator()
    assert f["meta"]["estimators"]["loss_law"] == loss_law
    for p in f["meta"]["paradigms"]:
        assert all("Huber (delta=" in e["estimator"] for e in f["compute_fits"][p].values())
        assert "delta=0.001" in f["compute_fits"][p]["final/eval_loss"]["estimator"]
        assert "delta=0.05" in f["compute_fits"][p]["ema/fd_judge"]["estimator"]
        loss = f["loss_fits"][p]
        assert loss["estimator"] == loss["heldout"]["estimator"] == loss_law
        assert loss["cross_check"]["estimator"] == est.VP_ESTIMATOR
        assert "L(N, D)" in loss["compute_optimal"]["estimator"]
        assert f["isoflop"][p]["estimator"] == isoflop.ESTIMATOR
        assert set(loss["ci95"]) == set(loss["se"]) == {"E", "A", "alpha", "B", "beta", "a", "b"}
    assert f["crossovers"] and all("Huber" in c["estimator"] for c in f["crossovers"])


def test_runs_without_budget_labels_are_clustered_by_flops(study):
    rows, _ = study
    runs = [dict(r, budget=float("nan")) for r in fits.main_runs(rows) if r["paradigm"] == "ar"]
    groups = fits.budget_groups(runs)
    assert len(groups) == 4 and all(len(g) == 3 for _, g in groups)
