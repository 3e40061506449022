"""TPU-pod command lines (subprocess mocked, no cloud library) and SLURM through submitit's local
executor with a fake training program."""
import json
import os
import pickle
import shlex
import subprocess
import sys
import textwrap

import pytest

from imgsynth import io
from launch import grid as grid_lib, runs as runs_lib, slurm, tpu

# Starting subprocesses from a process where JAX runs makes JAX warn about fork(); the children
# exec at once.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

GRID = os.path.join(grid_lib.GRIDS_DIR, "quickstart.py")


def quick_runs(pattern="^flow-T-"):
    g = grid_lib.load(GRID)
    return g, g.select(pattern)


def test_tpu_dry_run_command_lines():
    grid, runs = quick_runs("^flow-T-3e")
    target = tpu.TpuTarget(name="pod", zone="us-central2-b", project="proj",
                           repo_dir="~/imgsynth", queued_resource="qr",
                           accelerator_type="v4-32", runtime_version="tpu-ubuntu2204-base")
    launcher = tpu.TpuLauncher(grid, target, "/mnt/study", runs=runs, local_dir="/tmp/x")
    steps = launcher.plan()
    assert [s.kind for s in steps] == ["queued-create", "setup", "prepare", "train", "eval"]
    ssh = "gcloud compute tpus tpu-vm ssh pod --zone=us-central2-b --project=proj"
    config = ("--config=launch/grid_config.py:grid=experiments/grids/quickstart.py,"
              "run=flow-T-3e+11")
    expected = [
        "gcloud compute tpus queued-resources create qr --node-id=pod --zone=us-central2-b "
        "--project=proj --accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base",
        f"{ssh} --worker=all --command=cd ~/imgsynth && python3 -m pip install -q -e . 'jax[tpu]'",
        f"{ssh} --worker=all --command=cd ~/imgsynth && python3 -m launch.prepare {config}",
        f"{ssh} --worker=all --command=cd ~/imgsynth && {{ IMGSYNTH_DISTRIBUTED=auto python3 -m "
        f"imgsynth.train {config} --workdir=/mnt/study/runs/flow-T-3e+11 & echo $! > "
        "/tmp/imgsynth-flow-T-3e+11.pid; wait $!; }",
        f"{ssh} --worker=0 --command=cd ~/imgsynth && python3 -m imgsynth.evaluate "
        "--workdir=/mnt/study/runs/flow-T-3e+11",
    ]
    assert [" ".join(s.argv) for s in steps] == expected
    assert " ".join(steps[3].stop) == (f"{ssh} --worker=all --command=kill -TERM $(cat "
                                       "/tmp/imgsynth-flow-T-3e+11.pid) 2>/dev/null || true")
    text = launcher.dry_run()
    assert "queued-resources describe qr" in text
    for step in steps:       # the printed lines are valid shell for the same argv
        assert shlex.join(step.argv) in text and shlex.split(shlex.join(step.argv)) == step.argv
    # The launcher imports no cloud client library (checked in a clean interpreter: other tests
    # in this process may have imported TensorFlow, which brings google.* modules of its own).
    check = ("import sys, launch.tpu, launch.slurm, launch.local, launch.grid; "
             "bad = [m for m in sys.modules if m == 'googleapiclient' or m.startswith('google')]; "
             "assert not bad, bad")
    subprocess.run([sys.executable, "-c", check], check=True)


def test_tpu_run_sequence_with_mocked_gcloud(tmp_path):
    grid, runs = quick_runs()
    target = tpu.TpuTarget(name="pod", zone="z", queued_resource="qr", accelerator_type="v5p-16",
                           runtime_version="v2-alpha-tpuv5")
    calls, states = [], iter([(1, ""), (0, "WAITING_FOR_RESOURCES"), (0, "ACTIVE")])

    def runner(argv, log_path):
        calls.append(argv)
        command = argv[-1]
        return 1 if "imgsynth.train" in command and "flow-T-2e+12" in command else 0

    def query(argv):
        calls.append(argv)
        return next(states)

    lines = []
    launcher = tpu.TpuLauncher(grid, target, "/mnt/s", runs=runs, local_dir=str(tmp_path),
                               runner=runner, query=query, out=lines.append, poll_s=0)
    assert launcher.run() == 1
    kinds = []
    for argv in calls:
        if argv[3] == "queued-resources":
            kinds.append(argv[4])
        else:
            cmd = argv[-1]
            kinds.append("setup" if "pip install" in cmd else "prepare" if "launch.prepare" in cmd
                         else ("train " if "imgsynth.train" in cmd else "eval ")
                         + cmd.split("runs/")[1].split()[0])
    assert kinds == ["describe", "create", "describe", "describe", "setup", "prepare",
                     "train flow-T-3e+11", "eval flow-T-3e+11", "train flow-T-2e+12"]
    state = json.load(open(tmp_path / runs_lib.STATE_FILE))["runs"]
    assert state["flow-T-3e+11"]["train"] == state["flow-T-3e+11"]["eval"] == "done"
    assert state["flow-T-2e+12"]["train"] == "failed"
    # Launched again: the finished run is skipped, the failed one only with --retry_failed.
    calls.clear()
    tpu.TpuLauncher(grid, tpu.TpuTarget(name="pod", zone="z"), "/mnt/s", runs=runs,
                    local_dir=str(tmp_path), runner=runner, query=query, skip_setup=True,
                    out=lines.append).run()
    assert [c[-1] for c in calls if "runs/" in c[-1]] == []


def test_tpu_grid_must_be_in_the_checkout(tmp_path):
    path = tmp_path / "g.py"
    path.write_text("def sweep(add):\n    add(paradigm='flow', size='T', budget=1e12)\n")
    with pytest.raises(ValueError, match="outside the repository"):
        tpu.TpuLauncher(grid_lib.load(str(path)), tpu.TpuTarget("pod", "z"), "/w",
                        local_dir=str(tmp_path))


def test_slurm_time_and_task_pickling():
    assert slurm.time_minutes("90") == 90
    assert slurm.time_minutes("1:30:00") == 90
    assert slurm.time_minutes("2-00:00:00") == 2880
    assert slurm.time_minutes("1-12") == 2160
    with pytest.raises(ValueError, match="--time"):
        slurm.time_minutes("soon")
    task = slurm.RunTask(["a"], ["b"], "/r", {"X": "1"})
    task._proc = object()                     # a live process handle is never pickled
    again = pickle.loads(pickle.dumps(task))
    assert again._proc is None and again.train == ["a"] and again.env == {"X": "1"}


FAKE_TRAIN = """
import json, os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
d = args["--workdir"]
os.makedirs(d, exist_ok=True)
if "fail" in d:
    sys.exit("ValueError: bad run")
json.dump({"status": "done", "step": 3, "env_ok": os.environ.get("SUBMITIT_EXECUTOR")},
          open(os.path.join(d, "status.json"), "w"))
"""
FAKE_EVAL = """
import json, os, sys
d = sys.argv[1].split("=", 1)[1]
json.dump({"ok": 1}, open(os.path.join(d, "eval.json"), "w"))
"""


@pytest.mark.slow
def test_slurm_with_submitit_local_executor(tmp_path):
    (tmp_path / "train.py").write_text(FAKE_TRAIN)
    (tmp_path / "eval.py").write_text(FAKE_EVAL)
    grid_file = tmp_path / "s.py"
    grid_file.write_text(textwrap.dedent("""
        def sweep(add):
            add(paradigm="flow", size="T", budget=1e12)
            add(paradigm="flow", size="T", budget=3e12, ablation={"case": "fail"})
        """))
    grid = grid_lib.load(str(grid_file))
    commands = runs_lib.Commands(train=(str(tmp_path / "train.py"),),
                                 evaluate=(str(tmp_path / "eval.py"),))
    options = slurm.SlurmOptions(cluster="local", time="5")
    lines = []
    jobs = slurm.submit(grid, str(tmp_path / "w"), options, commands=commands, out=lines.append)
    assert len(jobs) == 2
    assert slurm.wait(grid, str(tmp_path / "w"), jobs, out=lines.append) == 1
    ok = runs_lib.run_dir(str(tmp_path / "w"), "flow-T-1e+12")
    assert io.read_status(ok) == {"status": "done", "step": 3, "env_ok": "local"}
    assert os.path.exists(os.path.join(ok, "eval.json"))
    state = json.load(open(tmp_path / "w" / runs_lib.STATE_FILE))["runs"]
    assert state["flow-T-1e+12"]["train"] == "done" and state["flow-T-1e+12"]["eval"] == "done"
    bad = state["flow-T-3e+12-case=fail"]
    assert bad["train"] == "failed" and "exit code 1" in bad["reason"]
    # Submitting again skips the finished run.
    assert [j for j in slurm.submit(grid, str(tmp_path / "w"), options, commands=commands,
                                    out=lines.append)] == []
    assert any("nothing to submit" in line for line in lines)
