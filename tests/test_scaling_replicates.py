"""Intervals and seed replicates in the report: results.csv carries `_lo`/`_hi` and `seed`,
replicates average into one configuration with an interval over seeds, figures draw error bars,
and a finding states a clear lead only when the intervals separate."""
import math
import os

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from fixtures.scaling_workdir import make_workdir
from imgsynth.scaling import figures, fits, replicates, table


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("seeded"))
    make_workdir(workdir, paradigms=("flow", "ar"), sizes=("S", "M"), budgets=(1e15, 1e16, 3e16),
                 extras=False, seeds=(0, 1, 2))
    return workdir, table.collect(workdir)


def test_results_csv_has_seed_and_interval_columns(seeded, tmp_path):
    _, results = seeded
    assert sorted({r["seed"] for r in results.rows}) == [0, 1, 2]
    assert len({r["run"] for r in results.rows}) == len(results.rows) == 2 * 2 * 3 * 3
    for column in ("ema/prompt_following/overall", "ema/fd_judge", "raw/kid/mean",
                   "ema/alignment_score"):
        assert {f"{column}_lo", f"{column}_hi"} <= set(results.columns)
        for r in results.rows:
            assert r[f"{column}_lo"] < r[column] < r[f"{column}_hi"]
    path, _ = table.write_tables(results, str(tmp_path))
    back = table.read_csv(path)
    assert [r["ema/fd_judge_hi"] for r in back] == [r["ema/fd_judge_hi"] for r in results.rows]
    assert "seed" in back[0] and not any("no intervals" in w for w in results.warnings)


def test_eval_json_without_intervals_is_read_with_one_warning(tmp_path):
    from fixtures.scaling_workdir import write_run
    import json
    run = write_run(str(tmp_path), "flow", "S", 1e15)
    path = os.path.join(run, "eval.json")
    ev = json.load(open(path))
    for w in ev["weights"].values():
        for key in [k for k in w if k.endswith(("_lo", "_hi"))]:
            del w[key]
        w["prompt_following"] = {k: v for k, v in w["prompt_following"].items()
                                 if not k.endswith(("_lo", "_hi"))}
        w["kid"] = {k: v for k, v in w["kid"].items() if not k.endswith(("_lo", "_hi"))}
    json.dump(ev, open(path, "w"))
    results = table.collect(str(tmp_path))
    assert math.isnan(results.rows[0]["ema/fd_judge_lo"])
    assert [w for w in results.warnings if "interval" in w] == [
        "runs/flow_S_1e15: eval.json has no intervals (evaluated before they were recorded); "
        "its _lo/_hi columns are NaN"]
    assert not any("lacks" in w for w in results.warnings)


def test_replicates_average_into_one_configuration(seeded):
    _, results = seeded
    groups = replicates.aggregate(fits.main_runs(results.rows))
    assert len(groups) == 2 * 2 * 3 and all(g["n_seeds"] == 3 for g in groups)
    g = groups[0]
    members = [r for r in results.rows if replicates.group_key(r) == replicates.group_key(g)]
    assert g["seeds"] == "0,1,2" and g["run"] == members[0]["run"]
    column = "ema/fd_judge"
    values = np.array([r[column] for r in members])
    assert g[column] == pytest.approx(values.mean())
    assert g[f"{column}_sd"] == pytest.approx(values.std(ddof=1))
    assert g[f"{column}_lo"] < g[column] < g[f"{column}_hi"]
    assert g["final/eval_loss_sd"] > 0 and g["train_flops"] == members[0]["train_flops"]


def test_interval_of_a_mean_over_seeds():
    t = 4.302652729749464 / math.sqrt(3)       # t(0.975, 2) · sd / sqrt(3), sd = 1
    lo, hi = replicates.mean_interval(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 2.0]),
                                      np.array([2.0, 3.0, 4.0]))
    assert (lo, hi) == pytest.approx((2 - t, 2 + t))
    # Seeds that agree by chance: the evaluation intervals, combined, still bound the mean.
    lo, hi = replicates.mean_interval(np.full(3, 2.0), np.full(3, 1.0), np.full(3, 4.0))
    assert (lo, hi) == pytest.approx((2 - math.sqrt(3) / 3, 2 + 2 * math.sqrt(3) / 3))
    assert replicates.mean_interval(np.array([5.0]), np.array([4.0]), np.array([7.0])) == (4, 7)
    assert math.isnan(replicates.mean_interval(np.ones(2), np.array([0, np.nan]), np.ones(2))[0])


def _row(paradigm, value, half, seed=0):
    row = {"run": f"{paradigm}-{seed}", "paradigm": paradigm, "size": "S", "seed": float(seed),
           "status": "done", "ablation": "", "budget": 1e15, "train_flops": 1e15}
    for w in ("raw", "ema"):
        for m in fits.HEADLINE:
            v = value if m == "prompt_following/overall" else math.nan
            row.update({f"{w}/{m}": v, f"{w}/{m}_lo": v - half, f"{w}/{m}_hi": v + half})
    return row


@pytest.mark.parametrize("half, clear", [(0.02, True), (0.08, False), (math.nan, None)])
def test_observed_lead_is_clear_only_when_intervals_separate(half, clear):
    rows = [_row("ar", 0.50, half), _row("flow", 0.40, half)]
    found = fits._findings(rows, {}, fits.study_metrics(), [])
    pf = [x for x in found if x["metric"] == "ema/prompt_following/overall"]
    assert len(pf) == 1 and pf[0]["winner"] == "ar" and pf[0]["clear"] is clear


def test_seeds_that_disagree_make_a_lead_unclear():
    tight = [_row("ar", v, 0.01, s) for s, v in enumerate((0.70, 0.45, 0.35))]
    rows = tight + [_row("flow", 0.45, 0.01, s) for s in range(3)]
    pf = [x for x in fits._findings(rows, {}, fits.study_metrics(), [])
          if x["metric"] == "ema/prompt_following/overall"][0]
    assert pf["winner"] == "ar" and pf["seeds"] == {"ar": 3, "flow": 3}
    assert pf["values"]["ar"] == pytest.approx(0.5) and pf["clear"] is False


def test_figures_draw_error_bars_on_averaged_points(seeded):
    _, results = seeded
    f = fits.fit_study(results.rows, budgets=[1e17], n_bootstrap=20, seed=0)
    fig = figures.metric_vs_flops(results.rows, f, "prompt_following/overall")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2 * 2                               # one per (paradigm, size)
    points = sum(len(line.get_xdata()) for line in ax.lines
                 if line.get_marker() in figures.MARKERS and line.get_linestyle() == "None")
    assert points == 2 * 2 * 3                              # seeds averaged: one per budget
