"""Multi-host training equals single-host training: 2 processes x 2 CPU devices (jax.distributed,
gloo) against 1 process x 4 devices, through the real `python -m imgsynth.train` command line and a
grid file, as the launcher runs it."""
import json
import os
import socket
import subprocess

import numpy as np
import pytest

from imgsynth import registry
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
