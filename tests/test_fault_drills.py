"""The fastest fault drills of benchmarks/fault_drills.py, with real processes: a trainer killed by
SIGKILL resumes bit-exact, a second trainer is refused while it runs, a launcher's children die
with it, and bad input is one line with exit code 2."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from imgsynth import cli, config as config_lib, io, train

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import fault_drills as drills  # noqa: E402

STEPS = 12


def drill_config():
    """The config the drills' command line gives (tests/conftest.py's 8 CPU devices included)."""
    c = config_lib.default_config("flow", f"size=T,steps={STEPS},global_batch_size=8")
    c.data.name, c.data.synthetic_examples = "synthetic", 64
    c.log_every_steps, c.checkpoint_every_steps, c.keep_checkpoints = 1, 4, 3
    c.eval_every_steps, c.eval_examples, c.peak_flops_per_s = 1000, 16, 1e11
    c.optimizer.warmup_steps = 2
    return c


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_exact_and_a_second_trainer_is_refused(tmp_path):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    proc = drills.start(drills.train_argv(killed, STEPS), str(tmp_path / "log"))
    try:
        target = random.Random(0).randrange(5, STEPS - 2)
        assert drills.wait(proc, lambda: drills.last_step(killed) >= 1)
        with pytest.raises(io.LockedError, match=f"pid {proc.pid} on "):
            train.train(drill_config(), killed)
        assert drills.wait(proc, lambda: drills.last_step(killed) >= target)
    finally:
        drills.kill(proc)
    assert io.read_status(killed)["status"] == "running"
    assert io.process_gone(io.read_status(killed))        # what --status shows as stale
    train.train(drill_config(), reference)
    train.train(drill_config(), killed)                   # resumes from the last checkpoint
    same, arrays = drills.same_run(reference, killed)
    assert same and arrays > 50


def test_a_launchers_children_die_with_it(tmp_path):
    """kill -9 of the parent: the kernel sends its child SIGTERM (launch/local.py)."""
    script = (
        "import functools, os, subprocess, sys, time\n"
        "from launch import local\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],\n"
        "    preexec_fn=functools.partial(local.die_with_parent, os.getpid()),\n"
        "    start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              env=drills.env())
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_unknown_config_key_is_one_line_with_the_nearest_key(tmp_path):
    code, out = drills.run_cli(drills.train_argv(str(tmp_path), STEPS, "--config.optimizer.lrr=1"))
    assert code == 2 and drills.one_line((code, out)), out
    assert "--config.optimizer.lrr" in out and "--config.optimizer.lr" in out.split("nearest")[1]


def test_launcher_usage_errors_are_one_line_exit_2(tmp_path, capsys):
    from launch import __main__ as launch_main, study
    afile = tmp_path / "file"
    afile.write_text("")
    for main, argv in ((launch_main.main, ["--grid=no_such_grid", f"--workdir={tmp_path}"]),
                       (launch_main.main, ["--grid=quickstart", f"--workdir={tmp_path}",
                                           "--parallel=0"]),
                       (launch_main.main, ["--workdir=x"]),
                       (study.main, [f"--workdir={afile}"]),
                       (study.main, ["--gird=quickstart"])):
        assert main(argv) == cli.USAGE_EXIT, argv
        out = capsys.readouterr()
        lines = (out.out + out.err).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)


def test_verbose_shows_the_traceback(capsys, monkeypatch):
    def main(argv):
        raise config_lib.ConfigError("bad")
    assert cli.run(main, ["--verbose"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    assert cli.run(main, []) == 2
    assert capsys.readouterr().err == "error: bad\n"
