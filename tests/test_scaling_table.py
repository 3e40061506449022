"""The results table: one row per run, NaN plus a warning for anything missing, curves joined
to examples seen, full-precision CSV, and a clear refusal when nothing is usable."""
import json
import math
import os

import pytest

from fixtures.scaling_workdir import BUDGETS, PARADIGMS, SIZES, make_workdir, write_run
from imgsynth.scaling import table


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(str(tmp_path_factory.mktemp("study")))


def test_collects_every_run_with_flat_metric_names(workdir):
    results = table.collect(workdir)
    main = len(PARADIGMS) * len(SIZES) * len(BUDGETS)
    assert len(results.rows) == main + 5  # 3 ablations, a failed and a running run
    assert results.columns[:len(table.RESULT_COLUMNS)] == list(table.RESULT_COLUMNS)
    row = next(r for r in results.rows if r["run"] == "runs/ar_M_1e16")
    assert (row["paradigm"], row["size"], row["status"], row["budget"]) == ("ar", "M", "done", 1e16)
    assert 0 < row["ema/prompt_following/overall"] < 1
    assert row["ema/fd_judge"] < row["raw/fd_judge"]
    assert row["params_non_embedding"] == SIZES["M"]
    assert row["train_flops"] == pytest.approx(row["steps"] * row["flops_per_example"] * 64)
    assert row["examples_seen"] == row["steps"] * 64
    assert row["samples_png"] == os.path.join("runs", "ar_M_1e16", "samples_ema.png")
    assert row["inference/flops_per_image"] > 0 and row["settings/num_samples"] == 256


def test_missing_values_are_nan_with_a_warning(workdir, tmp_path):
    results = table.collect(workdir)
    # A weight set the config left out is noted once as not evaluated, not warned about.
    no_ema = next(r for r in results.rows if r["ablation"] == "ema=false")
    assert math.isnan(no_ema["ema/fd_judge"]) and not math.isnan(no_ema["raw/fd_judge"])
    assert "ema weights: not evaluated" in no_ema["unavailable"]
    assert not any("ema-False" in w for w in results.warnings)
    # A key missing from a weight set that was evaluated is a warning.
    small = make_workdir(str(tmp_path), paradigms=("flow",), sizes=("S",), budgets=(1e15,),
                         extras=False)
    path = os.path.join(small, "runs", "flow_S_1e15", "eval.json")
    with open(path) as f:
        evaluation = json.load(f)
    del evaluation["weights"]["ema"]["fd_judge"]
    with open(path, "w") as f:
        json.dump(evaluation, f)
    row, = table.collect(small).rows
    assert math.isnan(row["ema/fd_judge"])
    assert any("lacks" in w and "ema/fd_judge" in w for w in table.collect(small).warnings)
    failed = next(r for r in results.rows if r["status"] == "failed")
    assert "out of memory" in failed["reason"] and math.isnan(failed["train_flops"])
    running = next(r for r in results.rows if r["status"] == "running")
    assert math.isnan(running["ema/fd_judge"]) and running["final/eval_loss"] > 0


def test_ema_matched_columns_are_the_emas_own_where_raw_saw_every_prompt(workdir, tmp_path):
    """Finding 4 compares the raw weights with the EMA on the same prompts: eval.json's
    `ema_matched` where the raw weights saw fewer (eval.raw_samples), else the EMA's columns."""
    row = next(r for r in table.collect(workdir).rows if r["run"] == "runs/ar_M_1e16")
    assert row["ema_matched/fd_judge"] == row["ema/fd_judge"]
    no_ema = next(r for r in table.collect(workdir).rows if r["ablation"] == "ema=false")
    assert math.isnan(no_ema["ema_matched/fd_judge"])
    small = make_workdir(str(tmp_path), paradigms=("flow",), sizes=("S",), budgets=(1e15,),
                         extras=False)
    path = os.path.join(small, "runs", "flow_S_1e15", "eval.json")
    with open(path) as f:
        evaluation = json.load(f)
    evaluation["weights"]["ema_matched"] = {**evaluation["weights"]["ema"], "fd_judge": 123.0}
    del evaluation["weights"]["raw"]   # and no raw weights: their absence is noted, not warned
    with open(path, "w") as f:
        json.dump(evaluation, f)
    results = table.collect(small)
    assert results.rows[0]["ema_matched/fd_judge"] == 123.0
    assert "raw weights: not evaluated" in results.rows[0]["unavailable"]
    assert not any("raw/" in w or "ema_matched" in w for w in results.warnings)


def test_curves_carry_examples_seen_of_their_step(workdir):
    curves = table.collect(workdir).curves
    ours = [c for c in curves if c["run"] == "runs/flow_S_1e15"]
    assert len(ours) == 8
    assert all(c["examples_seen"] == c["step"] * 64 for c in ours)
    assert ours[0]["eval/loss"] > ours[-1]["eval/loss"]


def test_csv_round_trip_is_exact(workdir, tmp_path):
    results = table.collect(workdir)
    results_csv, curves_csv = table.write_tables(results, str(tmp_path))
    back = table.read_csv(results_csv)
    assert len(back) == len(results.rows)
    for a, b in zip(results.rows, back):
        for c in ("train_flops", "ema/alignment_score", "raw/kid/mean", "final/eval_loss"):
            assert (math.isnan(a[c]) and math.isnan(b[c])) or a[c] == b[c]
    assert len(table.read_csv(curves_csv)) == len(results.curves)
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_extra_eval_keys_become_columns_and_bad_lines_warn(tmp_path):
    run = write_run(str(tmp_path), "flow", "S", 1e15)
    with open(os.path.join(run, "eval.json")) as f:
        ev = json.load(f)
    ev["weights"]["raw"]["precision"] = 0.7
    ev["settings"]["sampler"] = {"method": "heun", "steps": 8, "head_method": "euler"}
    ev["settings"]["eval_split"] = "test"
    del ev["weights"]["raw"]["alignment_score"]
    with open(os.path.join(run, "eval.json"), "w") as f:
        json.dump(ev, f)
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write('{"step": 99999, "train/lo')
    results = table.collect(str(tmp_path))
    assert results.rows[0]["raw/precision"] == 0.7 and "raw/precision" in results.columns
    assert results.rows[0]["settings/sampler/method"] == "heun"   # a setting, not a metric
    assert results.rows[0]["settings/sampler/steps"] == 8
    assert results.rows[0]["settings/sampler/head_method"] == "euler"
    assert results.rows[0]["settings/eval_split"] == "test"
    assert not any("not a number" in w for w in results.warnings)
    assert math.isnan(results.rows[0]["raw/alignment_score"])
    assert any("raw/alignment_score" in w for w in results.warnings)
    assert any("unreadable line" in w for w in results.warnings)


def test_refuses_when_nothing_is_usable(tmp_path):
    with pytest.raises(FileNotFoundError):
        table.collect(str(tmp_path / "missing"))
    with pytest.raises(table.NoResultsError, match="no run directories"):
        table.collect(str(tmp_path))
    write_run(str(tmp_path), "ar", "S", 1e15, status="failed", reason="preempted")
    with pytest.raises(table.NoResultsError, match="none has metrics.jsonl"):
        table.collect(str(tmp_path))


def test_an_unevaluated_trunk_is_no_warning_but_another_run_is(tmp_path):
    """A cooldown grid's trunk is never evaluated by design (its branches are); any other run done
    without eval.json is reported as not evaluated yet."""
    for name, fork_budgets in (("flow_S_1e15", [1e14, 1e15]), ("ar_S_1e15", None)):
        run = write_run(str(tmp_path), name.split("_")[0], "S", 1e15, evaluate=False)
        with open(os.path.join(run, "config.json")) as f:
            config = json.load(f)
        config["fork_budgets"] = fork_budgets
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(config, f)
    warnings = [w for w in table.collect(str(tmp_path)).warnings if "not evaluated yet" in w]
    assert len(warnings) == 1 and "ar_S_1e15" in warnings[0]
