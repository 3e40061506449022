"""The local launcher with cooldown branches (fake programs): trunk before its branches, no trunk
evaluation, branches of a failed trunk blocked with the reason, and both resumed after Ctrl-C."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from imgsynth import io
from launch import grid as grid_lib, local, runs as runs_lib
from test_launch_local import DRIVER, FAKE, fake, launcher  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

# The fake trainer, slow when told (it ends only once another run's training has started, or
# after 60 s: a fixed sleep is too short on a loaded machine), and logging the end of every
# training it completes.
END = 'with open(os.path.join(args["--workdir"], "metrics.jsonl"), "a") as f:'
SLOW = '''if todo == "slow":
    deadline = time.time() + 60
    while time.time() < deadline and not any(
            c["kind"] == "train" and c["run"] != run
            for c in map(json.loads, open(os.environ["FAKE_CALLS"]))):
        time.sleep(0.05)
'''
FAKE_BRANCHES = FAKE.replace(END, SLOW + END) + (
    'with open(os.environ["FAKE_CALLS"], "a") as f:\n'
    '    f.write(json.dumps({"kind": "end", "run": run}) + "\\n")\n')

GRID = """
def sweep(add):
    add(paradigm="flow", size="T", budgets=[1e12, 3e12], schedule="wsd_branches",
        overrides={"data.name": "synthetic"})
    add(paradigm="ar", size="T", budget=1e12, overrides={"data.name": "synthetic"})
"""
TRUNK, BRANCHES = "flow-T-trunk", ("flow-T-1e+12", "flow-T-3e+12")


@pytest.fixture
def setup(tmp_path, monkeypatch, fake):  # noqa: F811
    fake.script.write_text(FAKE_BRANCHES)
    path = tmp_path / "branches.py"
    path.write_text(GRID)
    monkeypatch.setenv("FAKE_GRID", "branches")
    return grid_lib.load(str(path)), tmp_path / "study", fake


def order(fake):
    return [(c["kind"], c["run"]) for c in fake.calls() if c["kind"] in ("train", "end")]


def test_trunk_before_branches_and_no_trunk_evaluation(setup):
    grid, work, fake = setup
    assert [r.name for r in grid.runs] == [TRUNK, *BRANCHES, "ar-T-1e+12"]
    fake.plan({f"train:{TRUNK}": "slow"})
    assert launcher(grid, work, fake).run() == 0
    seen = order(fake)
    trunk_end = seen.index(("end", TRUNK))
    assert all(seen.index(("train", b)) > trunk_end for b in BRANCHES), seen
    assert seen.index(("train", "ar-T-1e+12")) < trunk_end      # other runs do not wait
    assert sorted(c["run"] for c in fake.calls("eval")) == sorted([*BRANCHES, "ar-T-1e+12"])


def test_branches_of_a_failed_trunk_are_blocked_with_the_reason(setup):
    grid, work, fake = setup
    fake.plan({f"train:{TRUNK}": "fail"})
    run = launcher(grid, work, fake)
    assert run.run() == 1
    state = json.load(open(work / runs_lib.STATE_FILE))["runs"]
    for b in BRANCHES:
        assert state[b]["train"] == "blocked"
        assert f"trunk {TRUNK} failed" in state[b]["reason"] and "boom" in state[b]["reason"]
        status = io.read_status(runs_lib.run_dir(str(work), b))
        assert status["status"] == "pending" and "boom" in status["reason"]
    assert not {c["run"] for c in fake.calls("train")} & set(BRANCHES)
    assert any("blocked" in line for line in run.lines)
    fake.plan({})
    assert launcher(grid, work, fake, retry_failed=True).run() == 0
    seen = order(fake)
    assert all(seen.index(("train", b)) > seen.index(("end", TRUNK)) for b in BRANCHES)


def test_ctrl_c_then_trunk_and_branches_resume(setup, tmp_path):
    grid, work, fake = setup
    fake.plan({f"train:{TRUNK}": "hang"})
    (tmp_path / "driver.py").write_text(DRIVER)
    path = os.pathsep.join(filter(None, [grid_lib.REPO_ROOT, os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), grid.path, str(work),
                             str(fake.script)], env={**os.environ, "PYTHONPATH": path},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trunk = runs_lib.run_dir(str(work), TRUNK)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(trunk, "started")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == local.EXIT_INTERRUPTED, output
    assert io.read_status(trunk)["status"] == "pending"
    assert not {c["run"] for c in fake.calls("train")} & set(BRANCHES)   # none forked early
    fake.plan({})
    assert launcher(grid, work, fake).run() == 0
    assert all(io.read_status(runs_lib.run_dir(str(work), r.name))["status"] == "done"
               for r in grid.runs)
    seen = order(fake)
    assert [k for k in seen if k[1] == TRUNK] == [("train", TRUNK), ("train", TRUNK),
                                                  ("end", TRUNK)]


def test_tune_picks_the_lowest_eval_loss_and_the_study_reads_it(tmp_path, monkeypatch):
    from experiments import common
    from launch import tune
    grid = grid_lib.load("lr_sweep")
    assert all(not r.evaluate and r.ablation == {"lr": r.config.optimizer.lr} for r in grid.runs)
    work = tmp_path / "sweep"
    loss = {5e-4: 1.0, 1e-3: 0.9, 2e-3: 0.7, 4e-3: 0.8, 8e-3: 0.85}
    for r in grid.runs:
        if (r.paradigm, r.size) == ("ar", "S") and r.config.optimizer.lr == 4e-3:
            continue                                      # one unfinished run
        d = runs_lib.run_dir(str(work), r.name)
        io.write_status(d, "done", step=5)
        scale = {"T": 1.0, "XS": 0.5, "S": 0.25}[r.size]
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 2, "eval/loss_ema": 0.1}) + "\n")   # earlier, not final
            f.write(json.dumps({"step": 5, "eval/loss_ema": loss[r.config.optimizer.lr] * scale
                                + (0.5 if r.size == "S" and r.config.optimizer.lr == 2e-3
                                   else 0.0)}) + "\n")
    out = tmp_path / "tuned_lr.json"
    assert tune.main([f"--workdir={work}", f"--out={out}"]) == 0
    tuned = json.load(open(out))
    assert tuned["lr"]["flow"] == {"T": 2e-3, "XS": 2e-3, "S": 4e-3}
    assert tuned["edge"]["flow"] == {"S": "highest"}     # S sweeps up to 4e-3 only
    assert "S" not in tuned["lr"]["ar"]                  # never guessed from a partial sweep
    assert tuned["source"]["workdir"] == str(work) and tuned["source"]["metric"] == "eval/loss_ema"
    assert tuned["source"]["grid"] == os.path.join("experiments", "grids", "lr_sweep.py")
    monkeypatch.setattr(common, "TUNED_LR_FILE", str(out))
    lr = {(r.paradigm, r.size): r.config.optimizer.lr for r in grid_lib.load("cpu_study").runs}
    assert lr[("flow", "S")] == 4e-3 and lr[("flow", "T")] == 2e-3
    assert lr[("ar", "S")] == 3e-3                       # the study's default where none is tuned
    from imgsynth import config as config_lib            # a config outside the study: untouched
    assert config_lib.default_config("flow", "size=S").optimizer.lr == 3e-4
    assert grid_lib.load("cpu_study").tuned_lr == common.TUNED_LR_FILE
    study = tmp_path / "study"                            # the launcher keeps the rates it read
    study.mkdir()
    runs_lib.keep_tuned_lr(str(study), dataclasses.replace(grid_lib.load("cpu_study"),
                                                           tuned_lr=str(out)))
    assert json.load(open(study / "tuned_lr.json")) == tuned
    assert tune.main([f"--workdir={tmp_path / 'empty'}", f"--out={out}"]) == 2


def test_tune_averages_seed_replicates(tmp_path):
    from launch import tune

    def sweep(add):
        for lr in (1e-3, 3e-3):
            add(paradigm="flow", size="T", budget=1e12, evaluate=False, seeds=(0, 1),
                overrides={"optimizer.lr": lr}, ablation={"lr": lr})
    grid = grid_lib.expand(sweep, name="sweep")
    # Seed 0 alone would pick 3e-3; the mean over both seeds picks 1e-3.
    loss = {(1e-3, 0): 0.8, (1e-3, 1): 0.8, (3e-3, 0): 0.7, (3e-3, 1): 1.1}
    for r in grid.runs:
        d = runs_lib.run_dir(str(tmp_path), r.name)
        io.write_status(d, "done", step=5)
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": 5, "eval/loss_ema": loss[r.config.optimizer.lr, r.seed]})
                    + "\n")
    result, missing = tune.tune(grid, str(tmp_path))
    assert not missing and result["lr"] == {"flow": {"T": 1e-3}}
    assert result["loss"]["flow"]["T"] == {repr(1e-3): 0.8, repr(3e-3): pytest.approx(0.9)}


def test_trunks_start_first_longest_first(tmp_path, fake):  # noqa: F811
    """A grid's longest chain is a trunk and its branches: every trunk is queued before any other
    run, the longest first; the other runs keep the grid's order."""
    path = tmp_path / "two_trunks.py"
    path.write_text("""
def sweep(add):
    add(paradigm="ar", size="T", budget=1e12, overrides={"data.name": "synthetic"})
    add(paradigm="flow", size="T", budgets=[1e12, 3e12], schedule="wsd_branches",
        overrides={"data.name": "synthetic"})
    add(paradigm="flow", size="XS", budgets=[1e12, 3e13], schedule="wsd_branches",
        overrides={"data.name": "synthetic"})
""")
    grid = grid_lib.load(str(path))
    run = launcher(grid, tmp_path / "study", fake)
    os.makedirs(tmp_path / "study" / "runs")
    run.state = runs_lib.LaunchState(str(tmp_path / "study"), grid)
    planned = [r.name for _, r in run._plan()]
    assert planned == ["flow-XS-trunk", "flow-T-trunk", "ar-T-1e+12", "flow-T-1e+12",
                       "flow-T-3e+12", "flow-XS-1e+12", "flow-XS-3e+13"]
