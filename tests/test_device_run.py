"""benchmarks/device_run.sh: the plan of the GPU study and its graceful stop; `check_rehearsal`
is what its CPU rehearsal must do (run on Python 3.12 by tests/test_device_rehearsal.py)."""
import json
import math
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import device_plan  # noqa: E402
import device_run  # noqa: E402

OVERSIZE_GRID = '''from experiments.grids import gpu_study


def sweep(add):
    for paradigm in gpu_study.PARADIGMS:
        add(paradigm=paradigm, size="L", budgets=(1e15, 3e16), schedule="wsd_branches",
            overrides=gpu_study.overrides(paradigm, "L"))
'''


def plan(tmp_path, monkeypatch, capsys, *extra):
    # the step sets the grid's `--set cache_dir=...` in the environment for its children
    monkeypatch.delenv("IMGSYNTH_GRID_SET", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rc = device_run.main(["plan", *extra])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["step"] == "plan"
    return rc, lines[0], err


def test_plan_fits_the_budget_with_the_top_budget(tmp_path, monkeypatch, capsys):
    rc, p, _ = plan(tmp_path, monkeypatch, capsys)
    assert rc == 0
    assert {"train_flops", "top_budget", "runs", "eta_s", "items"} <= set(p)
    assert p["top_budget"] >= 5e15 and p["eta_s"] <= 360 and p["runs"] >= 27
    assert p["evaluations"] == 2 * 9   # every branch of the 9 trunks
    # itemised: the whole call, start-up to report, adds up to the estimate
    assert math.isclose(sum(p["items"].values()), p["eta_s"], abs_tol=0.5)
    assert {"start_env_peak_s", "data_s", "stages_encode_s", "grid_s",
            "report_s"} <= set(p["items"])
    # the grid cannot run faster than its GPU work at the assumed rate
    assert p["items"]["grid_s"] > p["gpu_train_s"] > 0


def test_plan_refuses_a_grid_over_the_budget_with_its_seconds(tmp_path):
    grid = tmp_path / "oversize.py"
    grid.write_text(OVERSIZE_GRID)
    env = {k: v for k, v in os.environ.items() if k != "IMGSYNTH_GRID_SET"}
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "device_run.sh"), "--plan",
                           f"--grid={grid}"], env={**env, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)
    p = json.loads(proc.stdout)
    assert proc.returncode == 2 and p["eta_s"] > 360 and p["top_budget"] == 3e16
    assert proc.stderr.count("\n") == 1 and f"estimated {p['eta_s']:.0f} s" in proc.stderr


def test_gpu_shares_never_exceed_the_device():
    jobs = [device_plan.Job("a", "train", 0, gpu_s=10, floor_s=100, end_s=0),   # wants 0.1
            device_plan.Job("b", "train", 0, gpu_s=10, floor_s=1, end_s=0),
            device_plan.Job("c", "train", 0, gpu_s=10, floor_s=1, end_s=0)]
    shares = device_plan._gpu_shares(jobs)
    assert shares["a"] == pytest.approx(0.1)
    assert shares["b"] == shares["c"] == pytest.approx(0.45)


def test_the_grid_is_stopped_gracefully_at_its_deadline():
    # a launcher stand-in that, like the launcher, stops cleanly on SIGTERM
    proc = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal("
                             "signal.SIGTERM, lambda *a: sys.exit(130)); time.sleep(60)"])
    rc, stopped = device_run.run_until(proc, time.time() + 1.0)
    assert stopped and rc == 130
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    assert device_run.run_until(done, time.time() + 60) == (0, False)


def check_rehearsal(proc, out) -> None:
    """What `device_run.sh --rehearse --out=OUT` must have done (tests/test_device_rehearsal.py
    runs it on Python 3.12 with the bundle alone, as the GPU image would): every step's JSON line
    and nothing else on stdout, every run trained, each paradigm's branch evaluated, six files."""
    if proc.returncode:
        print(proc.stdout, proc.stderr[-4000:], (out / "log_tail.txt").read_text()[-8000:])
    assert proc.returncode == 0
    lines = [json.loads(line) for line in proc.stdout.splitlines()]   # nothing else on stdout
    assert lines == [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert not [r for r in lines if "error" in r], lines
    steps = {r["step"]: r for r in lines}
    assert list(steps) == ["plan", "env", "peak", "data", "shipped", "encode", "grid",
                           "evaluate", "report", "done"]
    assert steps["env"]["backend"] == "cpu" and steps["peak"]["peak_flops_per_s"] > 0
    assert all(s["status"] == "done" for s in steps["encode"]["stages"].values())
    grid = steps["grid"]
    assert grid["trained"] == grid["runs"] == 6 and not grid["stopped_at_deadline"]
    assert steps["evaluate"]["evaluated"] == 3   # each paradigm's branch
    files = sorted(os.listdir(out))
    assert files == ["findings.md", "log_tail.txt", "report.html", "results.csv",
                     "samples.png", "steps.jsonl"]
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 6   # trunks: NaN rows
    assert "6 done" in (out / "log_tail.txt").read_text()   # the launcher's status table
