"""SLURM backend through submitit: one job per run, one task per node.

Every task starts `python -m imgsynth.train` for the run; `imgsynth.sharding.initialize_distributed`
sees SLURM's environment (SLURM_NTASKS > 1) and `jax.distributed.initialize()` joins the nodes.
After training, task 0 evaluates the run. When SLURM is about to end a job (time limit,
pre-emption), submitit calls `RunTask.checkpoint`: the training process is asked to checkpoint
(SIGTERM) and the job is requeued, resuming from there. The workdir must be on a filesystem every
node sees.

This module imports nothing heavy at the top: job processes unpickle `RunTask` from it.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
from collections.abc import Sequence

from imgsynth import io


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    nodes: int = 1
    gpus_per_node: int = 0
    partition: str | None = None
    time: str = "24:00:00"            # SLURM's format: MM, HH:MM:SS or D-HH:MM:SS
    cpus_per_task: int | None = None
    cluster: str | None = None        # None: submitit decides (slurm if sbatch exists); "local"
    signal_delay_s: int = 120         # checkpoint this long before the time limit


def time_minutes(text: str) -> int:
    """SLURM time limit (`90`, `1:30:00`, `2-00:00:00`) → minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time={text!r}: use minutes, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:                      # MM (or D-HH)
        minutes = a * 60 if days is not None else a
    elif c is None:                    # MM:SS (or D-HH:MM)
        minutes = a * 60 + b if days is not None else a + (b > 0)
    else:                              # HH:MM:SS
        minutes = a * 60 + b + (c > 0)
    return (days or 0) * 1440 + minutes


class RunTask:
    """What every task of a run's job executes: train, then (task 0) evaluate. Picklable."""

    def __init__(self, train: Sequence[str], evaluate: Sequence[str] | None, run_dir: str,
                 env: dict[str, str]):
        self.train, self.evaluate = list(train), list(evaluate) if evaluate else None
        self.run_dir, self.env = run_dir, dict(env)
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}

    def __setstate__(self, state):
        self.__dict__.update(state, _proc=None)

    def _call(self, argv: Sequence[str]) -> int:
        self._proc = subprocess.Popen(list(argv), env={**os.environ, **self.env})
        try:
            return self._proc.wait()
        finally:
            self._proc = None

    def __call__(self) -> dict:
        """Raises if training fails (the job fails); an evaluation failure is reported in the
        result instead, since the trained run is still good."""
        import submitit
        rank = submitit.JobEnvironment().global_rank
        rc = self._call(self.train)
        status = io.read_status(self.run_dir)
        if rc != 0 and rank == 0 and status.get("status") not in ("done", "failed"):
            io.write_status(self.run_dir, "failed", f"exit code {rc} (see the SLURM job log)",
                            step=status.get("step", 0))
        if rc != 0 or status.get("status") != "done":
            raise RuntimeError(f"training of {self.run_dir} ended with exit code {rc} and status "
                               f"{status.get('status')!r}: {status.get('reason')}")
        evaluation = "skipped"
        if rank == 0 and self.evaluate:
            rc = self._call(self.evaluate)
            evaluation = "done" if rc == 0 else f"failed (exit code {rc})"
        return {"status": status, "eval": evaluation}

    def checkpoint(self, *args, **kwargs):
        """Called by submitit before SLURM ends the job: checkpoint, then requeue this task."""
        import submitit
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)   # train.py checkpoints and exits "pending"
            try:
                self._proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return submitit.helpers.DelayedSubmission(self)


def make_executor(folder: str, options: SlurmOptions, name: str):
    import submitit
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    params = dict(name=name, nodes=options.nodes, tasks_per_node=1,
                  timeout_min=time_minutes(options.time), stderr_to_stdout=True,
                  slurm_signal_delay_s=options.signal_delay_s)
    if options.gpus_per_node:
        params["gpus_per_node"] = options.gpus_per_node
    if options.cpus_per_task:
        params["cpus_per_task"] = options.cpus_per_task
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def submit(grid, workdir: str, options: SlurmOptions, *, runs=None, commands=None,
           retry_failed: bool = False, out=None, timeouts=None) -> list:
    """Submits one job per run that is not done (as one job array); returns the submitit jobs.
    `timeouts` (launch.runs.Timeouts): how long a node's trainer waits for a silent peer and
    for the other nodes at start-up."""
    from launch import runs as runs_lib
    out = out or (lambda line: print(line, flush=True))
    commands = commands or runs_lib.Commands()
    workdir = os.path.abspath(workdir)
    state = runs_lib.LaunchState(workdir, grid)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), os.environ.get("PYTHONPATH")) if p),
           **(timeouts or runs_lib.Timeouts()).env()}
    tasks = []
    for run in runs if runs is not None else grid.runs:
        d = runs_lib.run_dir(workdir, run.name)
        status = io.read_status(d)["status"]
        evaluated = os.path.exists(os.path.join(d, "eval.json"))
        failed = status == "failed" or state.run(run.name).get("train") == "failed"
        if (status == "done" and evaluated) or (failed and not retry_failed):
            continue
        os.makedirs(d, exist_ok=True)
        tasks.append((run, RunTask(commands.train_argv(grid.path, run.name, d),
                                   commands.evaluate_argv(d) if not evaluated
                                   else None, d, env)))
    if not tasks:
        out("nothing to submit: every run is done (or failed: pass --retry_failed)")
        return []
    executor = make_executor(os.path.join(workdir, "slurm", "%j"), options, f"imgsynth-{grid.name}")
    with executor.batch():
        jobs = [executor.submit(task) for _, task in tasks]
    for (run, _), job in zip(tasks, jobs):
        state.update_run(run.name, train="submitted", job_id=str(job.job_id))
        out(f"{run.name}: job {job.job_id}")
    return jobs


def wait(grid, workdir: str, jobs, *, out=None) -> int:
    """Waits for submitted jobs and records each outcome; 0 when all succeeded, else 1."""
    from launch import runs as runs_lib
    out = out or (lambda line: print(line, flush=True))
    state = runs_lib.LaunchState(os.path.abspath(workdir), grid)
    names = {str(j.job_id): n for n, r in state.data["runs"].items()
             for j in jobs if r.get("job_id") == str(j.job_id)}
    failed = 0
    for job in jobs:
        name = names.get(str(job.job_id), str(job.job_id))
        try:
            result = job.result()
            evaluation = result["eval"]
            evaluated = os.path.exists(os.path.join(runs_lib.run_dir(workdir, name), "eval.json"))
            state.update_run(name, train="done", reason=None, eval=(
                evaluation.split(" ")[0] if evaluation != "skipped"
                else "done" if evaluated else "unavailable"))
            if evaluation.startswith("failed"):
                failed += 1
                out(f"{name}: evaluation {evaluation} (logs: {job.paths.stdout})")
        except Exception as e:   # submitit re-raises the task's error with its traceback
            failed += 1
            reason = _error_line(str(e)) or type(e).__name__
            state.update_run(name, train="failed", reason=reason)
            out(f"{name}: FAILED: {reason} (logs: {job.paths.stdout})")
    return 1 if failed else 0


def _error_line(text: str) -> str | None:
    """The exception line of a traceback that submitit wraps in its own message."""
    for line in reversed(text.splitlines()):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line.strip()):
            return line.strip()[:300]
    return None
