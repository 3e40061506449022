"""Multi-host training equals single-host training: 2 processes x 2 CPU devices (jax.distributed,
gloo) against 1 process x 4 devices, through the real `python -m imgsynth.train` command line and a
grid file, as the launcher runs it. Faults between the processes (a lost peer, SIGTERM to one,
settings that differ) end the job as they should (benchmarks/pod_drills.py), and the launchers
pass the timeouts on."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import types
from concurrent import futures

import numpy as np
import pytest

from imgsynth import config as config_lib, io, multihost, registry
from launch import grid as grid_lib, runs as runs_lib

GRID = """
def sweep(add):
    add(paradigm="flow", size="T", budget={budget!r}, overrides={{
        "data.name": "synthetic", "global_batch_size": 8, "peak_flops_per_s": 1e11,
        "eval_examples": 8, "log_every_steps": 1, "eval_every_steps": 1000,
        "checkpoint_every_steps": 1000, "optimizer.warmup_steps": 2}})
"""
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGSYNTH_", "XLA_FLAGS"))}
    # Optimisation level 0 compiles ~40% faster on both sides of the comparison.
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                         "--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [grid_lib.REPO_ROOT,
                                                        env.get("PYTHONPATH")])),
               PJRT_NPROC="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _losses(run_dir) -> list[float]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert steps == list(range(1, STEPS + 1)), steps   # one row per step, none duplicated
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    probe = grid_lib.expand(lambda add: add(paradigm="flow", size="T", budget=1e12,
                                            overrides={"global_batch_size": 8}), name="probe")
    budget = (STEPS + 0.5) * probe.runs[0].flops_per_step
    (tmp_path / "mh.py").write_text(GRID.format(budget=budget))
    grid = grid_lib.load(str(tmp_path / "mh.py"))
    (run,) = grid.runs
    assert run.steps == STEPS == registry.steps_for_budget(run.config, budget)

    def train(run_dir, env):
        argv = runs_lib.Commands().train_argv(grid.path, run.name, str(run_dir))
        log = open(str(run_dir) + ".log", "w")
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [train(tmp_path / "two", _env(2, IMGSYNTH_COORDINATOR=coordinator,
                                          IMGSYNTH_NUM_PROCESSES="2", IMGSYNTH_PROCESS_ID=str(i)))
             for i in range(2)]
    procs.append(train(tmp_path / "one", _env(4)))
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = {n: open(tmp_path / f"{n}.log").read()[-3000:] for n in ("two", "one")}
    assert codes == [0, 0, 0], logs

    two, one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    np.testing.assert_allclose(two, one, rtol=1e-5)
    for name in ("one", "two"):
        status = json.load(open(tmp_path / name / "status.json"))
        assert status["status"] == "done" and status["step"] == STEPS
        config = json.load(open(tmp_path / name / "config.json"))
        assert config["grid"]["name"] == "mh" and config["total_steps"] == STEPS
    # Only process 0 writes: one event file, no temporary leftovers, rows not duplicated (above).
    files = sorted(os.listdir(tmp_path / "two"))
    assert sum(f.startswith("events.out.tfevents") for f in files) == 1, files
    assert not [f for f in files if f.startswith(".tmp")], files


# ---- Faults between processes (benchmarks/pod_drills.py) ----------------------------------------

sys.path.insert(0, os.path.join(grid_lib.REPO_ROOT, "benchmarks"))
import pod_drills  # noqa: E402

DRILL_STEPS = 12


@pytest.fixture(scope="module")
def reference(stage_cache) -> futures.Future:
    """An uninterrupted 2-process run, compared with by each drill: trained once per test run, in
    the run's shared stage cache, beside the first drill that asks (the drills may land on both
    workers: the second waits on its lock). Its run does not depend on where it is written."""
    work = os.path.join(stage_cache, "pod-reference", "run")

    def train() -> str:
        with io.FileLock(work):
            if pod_drills.status_of(work)["status"] != "done":
                pod_drills.finish_pod(work, DRILL_STEPS, work + ".log")
        return work

    pool = futures.ThreadPoolExecutor(1)
    done = pool.submit(train)
    pool.shutdown(wait=False)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_lost_peer_ends_the_job_and_the_rerun_is_bit_exact(tmp_path, reference, victim):
    """kill -9 of one process (the coordinator or not): the survivor ends (with status `failed`
    naming the lost process when it can), and the rerun of both ends equal to an uninterrupted
    run, from the checkpoint both completed."""
    out = pod_drills.peer_kill_drill(str(tmp_path), DRILL_STEPS, reference, victim)
    assert out["last_complete_checkpoint"] == 4, out   # the one both processes completed
    if victim == 1:   # process 0's watchdog records it, and where a rerun resumes
        assert out["status_names_lost_process"] and out["exit_codes"] == [1, -9], out
        assert out["resume_step"] == 4, out
    else:             # the coordinator: JAX's runtime aborts process 1 (see launch/local.py)
        assert out["exit_codes"] == [-9, -6], out
    assert out["resume_bit_exact"] and out["arrays_compared"] > 50, out


@pytest.mark.slow
def test_sigterm_to_one_process_checkpoints_every_process_at_one_step(tmp_path, reference):
    out = pod_drills.preempt_drill(str(tmp_path), DRILL_STEPS, reference)
    assert out["same_step"] and out["step"] >= pod_drills.KILL_AT, out
    assert out["resume_bit_exact"] and out["arrays_compared"] > 50, out


@pytest.mark.slow
def test_processes_with_different_settings_are_refused_by_every_process(tmp_path):
    answered, tried, failures = pod_drills.bad_settings_drill(str(tmp_path), DRILL_STEPS)
    assert answered == tried == 3, failures


# ---- The launchers pass the timeouts on; --status names a missing process -------------------------

FAKE_TRAIN = """
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], **{k: v for k, v in os.environ.items()
                                                  if k.startswith("IMGSYNTH_")}}) + "\\n")
os.makedirs(args["--workdir"], exist_ok=True)
if os.environ.get("FAKE_LOSE") and sys.argv[1] != "eval":   # process 0 killed, 1 aborted
    json.dump({"status": "running"}, open(os.path.join(args["--workdir"], "status.json"), "w"))
    if os.environ["IMGSYNTH_PROCESS_ID"] == "0":
        os.kill(os.getpid(), 9)
    time.sleep(0.3)
    os.abort()
name, out = (("eval.json", {}) if sys.argv[1] == "eval" else ("status.json", {"status": "done"}))
json.dump(out, open(os.path.join(args["--workdir"], name), "w"))
"""


def test_local_multiprocess_mode_starts_one_job_of_n_processes(tmp_path, monkeypatch):
    from launch import local
    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    commands = runs_lib.Commands(train=(str(script),), evaluate=(str(script), "eval"))
    (tmp_path / "g.py").write_text('def sweep(add):\n    add(paradigm="flow", size="T", '
                                   'budget=1e12, overrides={"data.name": "synthetic"})\n')
    grid = grid_lib.load(str(tmp_path / "g.py"))
    launcher = local.LocalLauncher(grid, str(tmp_path / "w"), commands=commands, poll_s=0.02,
                                   out=lambda line: None, processes=2,
                                   timeouts=runs_lib.Timeouts(peer_s=7, init_s=11))
    assert launcher.run() == 0
    calls = [json.loads(line) for line in open(tmp_path / "calls.jsonl")]
    train = [c for c in calls if c["argv"][0] != "eval"]
    assert sorted(c["IMGSYNTH_PROCESS_ID"] for c in train) == ["0", "1"]
    assert {c["IMGSYNTH_COORDINATOR"] for c in train} == {train[0]["IMGSYNTH_COORDINATOR"]}
    assert all(c["IMGSYNTH_NUM_PROCESSES"] == "2" and c["IMGSYNTH_PEER_TIMEOUT_S"] == "7"
               and c["IMGSYNTH_INIT_TIMEOUT_S"] == "11" for c in train)
    evals = [c for c in calls if c["argv"][0] == "eval"]   # evaluation: one process
    assert len(evals) == 1 and "IMGSYNTH_PROCESS_ID" not in evals[0]

    # Process 0 killed, process 1 aborted by JAX's runtime: the launcher names the lost one.
    monkeypatch.setenv("FAKE_LOSE", "1")
    launcher.retry_failed = True
    io.write_json(tmp_path / "w" / "runs" / "flow-T-1e+12" / "status.json", {"status": "pending"})
    assert launcher.run() == 1
    status = io.read_status(str(tmp_path / "w" / "runs" / "flow-T-1e+12"))
    assert status["status"] == "failed"
    assert status["reason"].startswith("lost process 0 (SIGKILL) of 2;"), status


def test_tpu_and_slurm_pass_the_timeouts_to_every_worker(tmp_path, monkeypatch):
    from launch import slurm, tpu
    grid = grid_lib.load("quickstart")
    runs = grid.select("^flow-T-3e")
    timeouts = runs_lib.Timeouts(peer_s=45, init_s=600)
    launcher = tpu.TpuLauncher(grid, tpu.TpuTarget("pod", "z"), "/mnt/s", runs=runs,
                               local_dir=str(tmp_path), timeouts=timeouts)
    (train,) = [s for s in launcher.plan() if s.kind == "train"]
    assert ("IMGSYNTH_DISTRIBUTED=auto IMGSYNTH_PEER_TIMEOUT_S=45 IMGSYNTH_INIT_TIMEOUT_S=600 "
            "python3 -m imgsynth.train") in train.argv[-1]

    submitted = []

    class Executor:
        def batch(self):
            return contextlib.nullcontext()

        def submit(self, task):
            submitted.append(task)
            return types.SimpleNamespace(job_id=len(submitted))

    monkeypatch.setattr(slurm, "make_executor", lambda *a: Executor())
    slurm.submit(grid, str(tmp_path / "w"), slurm.SlurmOptions(), runs=runs, out=lambda l: None,
                 timeouts=timeouts)
    assert submitted and all(t.env["IMGSYNTH_PEER_TIMEOUT_S"] == "45"
                             and t.env["IMGSYNTH_INIT_TIMEOUT_S"] == "600" for t in submitted)
    assert runs_lib.PEER_TIMEOUT_ENV == multihost.PEER_TIMEOUT_ENV
    assert runs_lib.INIT_TIMEOUT_ENV == multihost.INIT_TIMEOUT_ENV
    assert runs_lib.PROCESSES_DIR == multihost.PROCESSES_DIR


def test_status_names_the_process_that_is_gone(tmp_path):
    """A running run whose process 1 is gone while process 0 lives shows as stale, naming it."""
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    run = tmp_path / "runs" / "r"
    alive = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
             "heartbeat": time.time()}
    io.write_json(run / "status.json", {**alive, "step": 4})
    io.write_json(run / multihost.PROCESSES_DIR / "0.json", {**alive, "process": 0})
    io.write_json(run / multihost.PROCESSES_DIR / "1.json", {**alive, "process": 1,
                                                             "pid": gone.pid})
    (row,) = runs_lib.status_rows(str(tmp_path), [grid_lib.RunRef("r", 10)])
    assert row["status"] == "stale (process 1 gone)"
    io.write_json(run / multihost.PROCESSES_DIR / "1.json", {**alive, "process": 1})
    (row,) = runs_lib.status_rows(str(tmp_path), [grid_lib.RunRef("r", 10)])
    assert row["status"] == "running"


def test_bad_job_descriptions_are_config_errors(monkeypatch):
    with pytest.raises(config_lib.ConfigError, match="process id 2 is not in 0..1"):
        multihost.initialize_arguments("127.0.0.1:1", 2, 2)
    monkeypatch.setenv(multihost.PEER_TIMEOUT_ENV, "0")
    with pytest.raises(config_lib.ConfigError, match="IMGSYNTH_PEER_TIMEOUT_S='0'"):
        multihost.initialize_arguments("127.0.0.1:1", 2, 0)
    monkeypatch.setenv(multihost.PEER_TIMEOUT_ENV, "20")
    arguments = multihost.initialize_arguments("127.0.0.1:1", 2, 1)
    assert arguments["heartbeat_timeout_seconds"] == 40   # JAX's abort: the backstop
    with pytest.raises(ValueError, match="--peer_timeout_s=0"):
        runs_lib.Timeouts(peer_s=0)
