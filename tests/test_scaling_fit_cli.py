"""`python -m imgsynth.scaling.fit` on a small CSV table: the JSON summary line, figures, column
names with spaces, and one-line refusals of bad input that write nothing."""
import json
import os
import shutil

import pytest

from imgsynth.scaling import fit

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "scaling_table.csv")
# The fixture's law (36 runs: 6 budgets 1e18–1e21 with ±5% FLOP jitter × 6 sizes, 0.3% noise).
TRUE = {"E": 1.8, "A": 480.0, "alpha": 0.34, "B": 2100.0, "beta": 0.37}
BASE = ["--csv", FIXTURE, "--n=Model Size", "--loss=final loss"]


def run(capsys, *args):
    code = fit.main([*BASE, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_line_has_exactly_the_documented_keys(capsys, tmp_path):
    code, out, _ = run(capsys, "--c=Training FLOP", "--bootstrap=40", "--seed=3", "--json",
                       f"--figures={tmp_path / 'figs'}")
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert list(summary) == list(fit.JSON_KEYS)
    assert summary["n_points"] == 36 and "Huber (delta=0.001)" in summary["estimator"]
    assert summary["alpha"] == pytest.approx(TRUE["alpha"], abs=0.01)
    assert summary["beta"] == pytest.approx(TRUE["beta"], abs=0.01)
    assert summary["a"] == pytest.approx(summary["beta"] / (summary["alpha"] + summary["beta"]))
    for name in fit.PARAMS:
        lo, hi = summary["ci"][name]
        assert lo <= summary[name] <= hi and summary["se"][name] > 0, name
    for name in ("loss_law", "isoflop", "frontier"):
        assert os.path.getsize(tmp_path / "figs" / f"{name}.png") > 0
    assert "isoFLOP budgets (clustered" in out and "6 with a minimum" in out


def test_d_column_group_labels_and_outlier_rule(capsys):
    """--d with the same data gives the same fit as --c (the tokens column is C/(6N)); labels
    replace clustering; --drop_highest removes the worst losses."""
    _, out_c, _ = run(capsys, "--c=Training FLOP", "--bootstrap=0", "--json")
    code, out_d, _ = run(capsys, "--d=Training Tokens", "--group=budget", "--bootstrap=0",
                         "--json", "--drop_highest=2")
    assert code == 0
    c, d = (json.loads(o.strip().splitlines()[-1]) for o in (out_c, out_d))
    assert d["n_points"] == 34 and c["ci"]["alpha"] is None and c["se"]["E"] is None
    assert d["alpha"] == pytest.approx(c["alpha"], abs=0.01)
    assert "isoFLOP budgets (labels): 6" in out_d


@pytest.mark.parametrize("edit, args, message", [
    (None, ["--c=FLOPs"], "no column 'FLOPs' (36 rows"),
    (lambda rows: rows[5].__setitem__(3, ""), ["--c=Training FLOP"],
     "column 'final loss': 1 of 36 rows are missing"),
    (lambda rows: rows[2].__setitem__(0, "-1e7"), ["--c=Training FLOP"],
     "column 'Model Size': 1 of 36 rows are <= 0"),
    (lambda rows: rows[7].__setitem__(1, "n/a"), ["--c=Training FLOP"],
     "column 'Training FLOP': row 8 of 36 is not a number"),
    (None, ["--c=Training FLOP", "--drop_highest=31"], "column 'final loss': 5 rows, fewer than"),
    (lambda rows: [r.__setitem__(0, "1e8") for r in rows], ["--c=Training FLOP"],
     "columns 'Model Size', 'Training FLOP', 'final loss', 36 rows: distinct model sizes"),
])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(capsys, tmp_path, edit, args,
                                                             message):
    path = tmp_path / "table.csv"
    shutil.copy(FIXTURE, path)
    if edit is not None:
        with open(path) as f:
            rows = [line.rstrip("\n").split(",") for line in f]
        edit(rows[1:])
        path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    figs = tmp_path / "figs"
    code = fit.main(["--csv", str(path), "--n=Model Size", "--loss=final loss", *args, "--json",
                     f"--figures={figs}"])
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    assert len(out.err.strip().splitlines()) == 1 and message in out.err, out.err
    assert not figs.exists()


def test_needs_exactly_one_of_d_or_c(capsys):
    with pytest.raises(SystemExit):
        fit.main(BASE)
    with pytest.raises(SystemExit):
        fit.main([*BASE, "--c=Training FLOP", "--d=Training Tokens"])
