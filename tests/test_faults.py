"""Faults a run must survive: a broken newest checkpoint, a half-written metrics line, a restart
before the first checkpoint, a second trainer on the same run, a changed config on a finished run."""
import json
import os
import shutil

import pytest

from imgsynth import config as config_lib, io, train
from test_train import rows, tiny


def _steps(workdir):
    return [r["step"] for r in rows(workdir)]


@pytest.mark.slow
def test_broken_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    c = tiny("flow", steps=6, checkpoint_every_steps=2, keep_checkpoints=3)
    straight = train.train(c, str(tmp_path / "a"))
    b = tmp_path / "b"
    train.train(c, str(b))
    for f in (b / "checkpoints" / "6").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            f.write_bytes(f.read_bytes()[:32])          # truncate every data file of step 6
    (b / "status.json").write_text(json.dumps({"status": "running", "step": 6}))
    resumed = train.train(c, str(b))
    assert (b / "checkpoints.broken" / "6").is_dir()    # moved aside, not deleted
    assert resumed["train/loss"] == straight["train/loss"]
    assert _steps(str(b)) == _steps(str(tmp_path / "a"))


@pytest.mark.slow
def test_half_written_metrics_line_and_restart_before_a_checkpoint(tmp_path):
    c = tiny("flow", steps=4)
    train.train(c, str(tmp_path))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "train/lo')                # a kill mid-write
    shutil.rmtree(tmp_path / "checkpoints")              # died before its first checkpoint
    os.remove(tmp_path / "status.json")
    train.train(c, str(tmp_path))
    assert _steps(str(tmp_path)) == [0, 1, 2, 3, 4]      # one series, no half line


def test_second_trainer_is_refused_naming_the_holder(tmp_path):
    with io.FileLock(tmp_path / "run"):
        with pytest.raises(io.LockedError, match=f"pid {os.getpid()}"):
            train.train(tiny("flow"), str(tmp_path))


def test_changed_config_on_a_finished_or_unfinished_run_is_refused(tmp_path):
    train.train(tiny("flow"), str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="different config"):
        train.train(tiny("flow", **{"optimizer.lr": 1.0}), str(tmp_path))
    os.remove(tmp_path / "status.json")          # an unfinished run is refused the same way
    with pytest.raises(config_lib.ConfigError, match="different config"):
        train.train(tiny("flow", **{"optimizer.lr": 1.0}), str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(config_lib.ConfigError, match="is a file"):
        train.train(tiny("flow"), str(tmp_path / "file"))


def test_status_tells_a_live_run_from_a_dead_one(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    from launch import runs as runs_lib

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    here, now = socket.gethostname(), time.time()
    cases = {"alive": dict(pid=os.getpid(), host=here, heartbeat=now - 3600),
             "dead": dict(pid=int(dead), host=here, heartbeat=now),
             "far-fresh": dict(pid=1, host="elsewhere", heartbeat=now - 60),
             "far-old": dict(pid=1, host="elsewhere", heartbeat=now - 2 * io.STALE_AFTER_S)}

    class Run:
        def __init__(self, name):
            self.name, self.steps = name, 10

    for name, fields in cases.items():
        d = runs_lib.run_dir(str(tmp_path), name)
        os.makedirs(d)
        io.write_status(d, "running", step=4, **fields)
    rows = runs_lib.status_rows(str(tmp_path), [Run(n) for n in [*cases, "never"]])
    assert [r["status"] for r in rows] == ["running", "stale (process gone)", "running",
                                           "stale (process gone)", "pending"]
    assert "stale (process gone)" in runs_lib.status_table(rows)
