"""The local backend with fake train/evaluate/prepare programs: resume, skip, failures, threads,
stages, foreign run directories, Ctrl-C, the status table, compile-only and the study command."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from imgsynth import io
from launch import grid as grid_lib, local, memory, runs as runs_lib

# Starting subprocesses from a process where JAX runs makes JAX warn about fork(); the children
# exec at once.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

# A stand-in for `python -m imgsynth.train` (and evaluate/prepare): behaviour per run from
# $FAKE_PLAN, every call logged to $FAKE_CALLS. Starts in milliseconds (no JAX).
FAKE = '''
import json, os, signal, sys, time
args = dict(a.split("=", 1) for a in sys.argv[2:] if a.startswith("--") and "=" in a)
kind = sys.argv[1]
run = (args["--config"].rsplit("run=", 1)[1] if "--config" in args
       else os.path.basename(args["--workdir"]))
plan = json.load(open(os.environ["FAKE_PLAN"]))
todo = plan.get(f"{kind}:{run}", "ok")
time.sleep(0.05)                         # the launcher pins cores right after starting us
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"kind": kind, "run": run, "threads": os.environ.get("PJRT_NPROC"),
                        "arenas": os.environ.get("MALLOC_ARENA_MAX"),
                        "cores": sorted(os.sched_getaffinity(0))}) + "\\n")
def put(name, obj):
    tmp = os.path.join(args["--workdir"], ".tmp-" + name)
    json.dump(obj, open(tmp, "w")); os.replace(tmp, os.path.join(args["--workdir"], name))
if kind == "prepare":
    if todo == "fail":
        sys.exit("error: cannot build the dataset: disk full")
    if todo == "progress":               # like imgsynth.stages: a stage trains, 4 of 10 steps
        d = os.path.join(os.path.dirname(os.environ["FAKE_PLAN"]), "alignment-training")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "metrics.jsonl"), "w").write(json.dumps({"step": 4}) + "\\n")
        json.dump({"stage": "alignment", "run_dir": d, "total_steps": 10,
                   "started": time.time() - 8}, open(os.environ["IMGSYNTH_STAGE_PROGRESS"], "w"))
        time.sleep(1.0)
    sys.exit(0)
if kind == "eval":
    if todo == "fail":
        print("Traceback (most recent call last):\\nRuntimeError: sampler diverged"); sys.exit(1)
    put("eval.json", {"ok": 1}); sys.exit(0)
if kind == "compile":
    print("some log line")
    print(json.dumps({"devices": 4, "mesh": {"data": 4}, "params_total": 3e5,
                      "peak_bytes_per_device": 2**30, "compile_s": 1.5}))
    sys.exit(0)
os.makedirs(args["--workdir"], exist_ok=True)
put("config.json", {"grid": {"name": os.environ["FAKE_GRID"]}})
put("status.json", {"status": "running", "step": 0})
if todo == "fail":
    print("Traceback (most recent call last):\\nValueError: boom"); sys.exit(1)
if todo == "silent_crash":
    os._exit(3)
if todo == "hang":                       # like train.py: SIGINT/SIGTERM -> checkpoint, pending
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    open(args["--workdir"] + "/started", "w").close()
    while not stop:
        time.sleep(0.02)
    put("status.json", {"status": "pending", "reason": "pre-empted at step 3", "step": 3})
    sys.exit(0)
if todo == "hang_unprotected":           # killed before it could install its handler
    open(args["--workdir"] + "/started", "w").close()
    time.sleep(60)
with open(os.path.join(args["--workdir"], "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 7, "train/loss": 1.25}) + "\\n")
put("status.json", {"status": "done", "step": 7})
'''

GRID = """
def sweep(add):
    for paradigm in ("flow", "ar"):
        for budget in (1e12, 3e12):
            add(paradigm=paradigm, size="T", budget=budget, overrides=%r)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    calls, plan = tmp_path / "calls.jsonl", tmp_path / "plan.json"
    plan.write_text("{}")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_PLAN", str(plan))
    commands = runs_lib.Commands(train=(str(script), "train"), evaluate=(str(script), "eval"),
                                 prepare=(str(script), "prepare"))

    class Fake:
        def __init__(self):
            self.commands, self.script = commands, script

        def plan(self, todo: dict):
            plan.write_text(json.dumps(todo))

        def calls(self, kind=None):
            if not calls.exists():
                return []
            rows = [json.loads(line) for line in calls.read_text().splitlines()]
            return [r for r in rows if kind is None or r["kind"] == kind]

    return Fake()


def make_grid(tmp_path, monkeypatch, data="synthetic"):
    path = tmp_path / "tiny.py"
    path.write_text(GRID % ({"data.name": data, "data.folder_name": "mine"} if data == "folder"
                            else {"data.name": data}))
    monkeypatch.setenv("FAKE_GRID", "tiny")
    return grid_lib.load(str(path))


def launcher(grid, workdir, fake, **kw):
    kw.setdefault("parallel", 2)
    lines = []
    kw.setdefault("out", lines.append)
    launch = local.LocalLauncher(grid, str(workdir), commands=fake.commands, poll_s=0.02, **kw)
    launch.lines = lines
    return launch


def test_runs_skip_resume_and_failures(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch)
    work = tmp_path / "study"
    fake.plan({"train:flow-T-3e+12": "fail", "eval:ar-T-1e+12": "fail"})
    run = launcher(grid, work, fake)
    assert run.run() == 1
    status = {r.name: io.read_status(runs_lib.run_dir(str(work), r.name)) for r in grid.runs}
    assert {n: s["status"] for n, s in status.items()} == {"flow-T-1e+12": "done",
        "flow-T-3e+12": "failed", "ar-T-1e+12": "done", "ar-T-3e+12": "done"}
    assert "ValueError: boom" in status["flow-T-3e+12"]["reason"]
    state = json.load(open(work / runs_lib.STATE_FILE))["runs"]
    assert "ValueError: boom" in state["flow-T-3e+12"]["log_tail"]
    assert state["ar-T-1e+12"]["eval"] == "failed"
    assert "sampler diverged" in state["ar-T-1e+12"]["eval_reason"]
    assert "ValueError: boom" in open(work / "runs" / "flow-T-3e+12" / "launch.log").read()
    assert len(fake.calls("train")) == 4 and len(fake.calls("eval")) == 3
    assert not fake.calls("prepare")                    # synthetic data needs no stages
    # Two at a time on disjoint cores, the threads divided.
    cores = local.available_cores()
    if len(cores) >= 2:
        for c in fake.calls("train"):
            assert c["threads"] == str(len(cores) // 2) and len(c["cores"]) == len(cores) // 2
    # One malloc arena that keeps its pages, for every child (XLA:CPU's per-step buffers).
    assert {c["arenas"] for c in fake.calls()} == {"1"}

    rows = {r["run"]: r for r in runs_lib.status_rows(str(work), grid.runs)}
    assert rows["flow-T-1e+12"]["loss"] == 1.25 and rows["flow-T-1e+12"]["step"] == 7
    assert rows["flow-T-1e+12"]["total"] == grid.run("flow-T-1e+12").steps
    assert rows["flow-T-3e+12"]["status"] == "failed" and "boom" in rows["flow-T-3e+12"]["reason"]
    assert rows["ar-T-1e+12"]["eval"] == "failed"
    assert "flow-T-3e+12" in runs_lib.status_table(rows.values())

    # Again: done runs and failures are skipped, nothing runs.
    fake.plan({})
    assert launcher(grid, work, fake).run() == 1
    assert len(fake.calls("train")) == 4 and len(fake.calls("eval")) == 3
    # --retry_failed reruns the failed training and the failed evaluation only.
    assert launcher(grid, work, fake, retry_failed=True).run() == 0
    assert [c["run"] for c in fake.calls("train")[4:]] == ["flow-T-3e+12"]
    assert sorted(c["run"] for c in fake.calls("eval")[3:]) == ["ar-T-1e+12", "flow-T-3e+12"]
    assert all(io.read_status(runs_lib.run_dir(str(work), r.name))["status"] == "done"
               for r in grid.runs)


def test_silent_crash_is_recorded_and_half_done_runs_resume(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch)
    work = tmp_path / "study"
    d = runs_lib.run_dir(str(work), "ar-T-3e+12")
    io.write_status(d, "running", step=5)          # a launcher that died mid-run
    io.write_status(runs_lib.run_dir(str(work), "ar-T-1e+12"), "done", step=9)
    fake.plan({"train:flow-T-1e+12": "silent_crash"})
    assert launcher(grid, work, fake, parallel=1).run() == 1
    assert sorted(c["run"] for c in fake.calls("train")) == ["ar-T-3e+12", "flow-T-1e+12",
                                                             "flow-T-3e+12"]
    crashed = io.read_status(runs_lib.run_dir(str(work), "flow-T-1e+12"))
    assert crashed["status"] == "failed" and crashed["reason"].startswith("exit code 3")
    assert io.read_status(d)["status"] == "done"


def test_foreign_run_dirs_are_recorded(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch)
    work = tmp_path / "study"
    foreign = runs_lib.run_dir(str(work), "ar-T-3e+12")
    os.makedirs(foreign)
    (open(os.path.join(foreign, "config.json"), "w")).write(json.dumps({"grid": {"name": "other"}}))
    run = launcher(grid, work, fake)
    assert run.run() == 1                                 # the foreign run dir is a failure
    state = json.load(open(work / runs_lib.STATE_FILE))["runs"]
    assert state["ar-T-3e+12"]["train"] == "blocked"
    assert "grid 'other'" in state["ar-T-3e+12"]["reason"]
    assert state["flow-T-1e+12"]["train"] == "done"
    assert len(fake.calls("train")) == 3


def test_a_training_stage_shows_its_step_total_and_eta(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch, data="folder")
    fake.plan({f"prepare:{r.name}": "progress" for r in grid.runs})
    run = launcher(grid, tmp_path / "study", fake, parallel=1, progress_every_s=0.2)
    assert run.run() == 0
    shown = [line for line in run.lines if "alignment 4/10 steps" in line]
    found = shown and re.search(r"alignment 4/10 steps, (\d+)s in, ETA (\d+)s$", shown[0])
    assert found, run.lines
    elapsed, eta = map(int, found.groups())
    assert elapsed >= 8 and abs(eta - 1.5 * elapsed) <= 1   # 6 steps left at 4 per `elapsed`
    assert "preparing data, autoencoders and instruments for" in run.lines[0]


def test_stages_once_per_setting_and_a_failed_stage_blocks_its_runs(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch, data="shapes")
    work = tmp_path / "study"
    fake.plan({"prepare:ar-T-1e+12": "fail"})
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")            # the user's allocator setting wins
    assert launcher(grid, work, fake).run() == 1
    prepares = fake.calls("prepare")
    assert {c["arenas"] for c in fake.calls()} == {"4"}
    assert sorted(c["run"] for c in prepares) == ["ar-T-1e+12", "flow-T-1e+12"]
    cores = local.available_cores()
    if len(cores) >= 2:                       # side by side, on half of the cores each
        assert [c["threads"] for c in prepares] == [str(len(cores) // 2)] * 2
        assert not set(prepares[0]["cores"]) & set(prepares[1]["cores"])
    assert sorted(c["run"] for c in fake.calls("train")) == ["flow-T-1e+12", "flow-T-3e+12"]
    state = json.load(open(work / runs_lib.STATE_FILE))
    assert state["runs"]["ar-T-3e+12"]["train"] == "blocked"
    assert "disk full" in state["runs"]["ar-T-3e+12"]["reason"]
    assert sorted(s["status"] for s in state["stages"].values()) == ["done", "failed"]


DRIVER = """
import sys
from launch import grid as grid_lib, local, runs as runs_lib
commands = runs_lib.Commands(train=(sys.argv[3], "train"), evaluate=(sys.argv[3], "eval"),
                             prepare=(sys.argv[3], "prepare"))
grid = grid_lib.load(sys.argv[1])
sys.exit(local.LocalLauncher(grid, sys.argv[2], parallel=3, commands=commands, poll_s=0.02).run())
"""


def test_ctrl_c_leaves_every_status_consistent(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch)
    work = tmp_path / "study"
    fake.plan({"train:flow-T-1e+12": "hang",
                                          "train:flow-T-3e+12": "hang_unprotected"})
    (tmp_path / "driver.py").write_text(DRIVER)
    path = os.pathsep.join(filter(None, [grid_lib.REPO_ROOT, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), grid.path, str(work),
                             str(fake.script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    hung = [runs_lib.run_dir(str(work), n) for n in ("flow-T-1e+12", "flow-T-3e+12")]
    deadline = time.monotonic() + 60
    while not all(os.path.exists(os.path.join(d, "started")) for d in hung):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == local.EXIT_INTERRUPTED, output
    graceful, killed = (io.read_status(d) for d in hung)
    assert graceful == {**graceful, "status": "pending", "reason": "pre-empted at step 3"}
    assert killed["status"] == "pending" and "interrupted by the launcher" in killed["reason"]
    assert "stopping" in output
    started = {c["run"] for c in fake.calls("train")}
    # The two hung runs, plus at most the one quick run the scheduler may have started before
    # them; nothing new is started after Ctrl-C.
    assert {"flow-T-1e+12", "flow-T-3e+12"} <= started and len(started) <= 3, started
    # Launching again resumes the interrupted runs and runs the rest.
    fake.plan({})
    assert launcher(grid, work, fake).run() == 0
    assert all(io.read_status(runs_lib.run_dir(str(work), r.name))["status"] == "done"
               for r in grid.runs)


def test_one_launcher_per_workdir(tmp_path, monkeypatch, fake):
    import fcntl
    grid = make_grid(tmp_path, monkeypatch)
    work = tmp_path / "study"
    os.makedirs(work)
    with open(work / ".launch.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(local.LaunchError, match="another launcher"):
            launcher(grid, work, fake).run()


def test_core_slots_and_thread_env():
    assert local.core_slots(2, [0, 1, 2, 3]) == [(0, 1), (2, 3)]
    assert local.core_slots(1, [0, 1]) == [None]
    assert local.core_slots(3, [0, 1]) == [None, None, None]
    env = local.thread_env(2)
    assert env["PJRT_NPROC"] == env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "2"


def test_compile_only_table(tmp_path, monkeypatch, fake):
    grid = make_grid(tmp_path, monkeypatch)
    commands = runs_lib.Commands(train=(str(fake.script), "compile", "--workdir=x"))
    rows = memory.compile_runs(grid, grid.runs[:2], commands=commands, out=lambda s: None)
    assert rows[0]["report"]["peak_bytes_per_device"] == 2**30
    text = memory.table(rows + [{"run": "bad", "report": None, "error": "exit code 1: OOM"}])
    assert "1.000 GiB" in text and "bad" in text and "OOM" in text
    assert memory.parse_report("x\n{bad json}\n") is None


def test_study_runs_the_grid_then_the_report(tmp_path, monkeypatch, fake, capsys):
    from launch import study
    from imgsynth.scaling import report
    grid = make_grid(tmp_path, monkeypatch)
    built = []
    monkeypatch.setattr(report, "build_report", lambda workdir, **kw: built.append(workdir)
                        or f"{workdir}/report/report.html")
    original = local.LocalLauncher.__init__
    monkeypatch.setattr(local.LocalLauncher, "__init__", lambda self, *a, **kw: original(
        self, *a, **{**kw, "commands": fake.commands, "poll_s": 0.02}))
    work = str(tmp_path / "study")
    assert study.main([f"--grid={grid.path}", f"--workdir={work}", "--parallel=2"]) == 0
    out = capsys.readouterr().out
    assert built == [work] and f"report: {work}/report/report.html" in out
    assert "trained 4/4" in out and len(fake.calls("train")) == 4


def test_dry_run_estimates_the_stages_of_data_without_shipped_instruments(tmp_path, monkeypatch):
    from experiments import autoencoder as autoencoder_experiment
    from imgsynth import stages
    from launch import stage_estimate
    assert stage_estimate.stage_lines(make_grid(tmp_path, monkeypatch, data="shapes").runs) == []
    runs = make_grid(tmp_path, monkeypatch, data="folder").runs
    lines = stage_estimate.stage_lines(runs)
    kl = stages.autoencoder_config(runs[0].config, build_data=False).total_steps
    assert kl == autoencoder_experiment.OWN_DATA_MIN_STEPS   # the data is not built, nor is it
    assert not os.path.exists(stages.build.dataset_dir(stages.data_config(runs[0].config)))
    assert len(lines) == 3 and f"autoencoder kl {kl} steps, alignment 1000 steps" in lines[0]
    assert "autoencoder fsq" in lines[1] and "alignment" not in lines[1]   # shared, counted once
    assert re.search(r"about \d+[hm]\d\d[ms]$", lines[0]) and "before the first run" in lines[2]
