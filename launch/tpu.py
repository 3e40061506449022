"""TPU-pod backend: `gcloud compute tpus tpu-vm ssh NAME --worker=all` runs each step on every host.

JAX on TPU is multi-controller: the same command starts on each worker, and
`jax.distributed.initialize()` finds the others through the TPU metadata
(`IMGSYNTH_DISTRIBUTED=auto` asks `imgsynth.sharding.initialize_distributed` to join). Steps:
optionally create a queued resource and wait for it, set up (pip install) on all workers, build
the shared stages, then per run: train on all workers, evaluate on worker 0. Runs go one after
another (the pod is one machine). The workdir is a path on the workers that every worker sees
(a gcsfuse or NFS mount): orbax writes checkpoint shards from every host.

Only the `gcloud` command line is used; no cloud library is imported.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from imgsynth import io
from launch import grid as grid_lib, runs as runs_lib


@dataclasses.dataclass(frozen=True)
class TpuTarget:
    name: str
    zone: str
    project: str | None = None
    repo_dir: str = "~/imgsynth"          # the repository checkout on every worker (shell path)
    python: str = "python3"
    queued_resource: str | None = None   # create/await this queued resource for node `name`
    accelerator_type: str | None = None  # e.g. v5litepod-64; needed to create a queued resource
    runtime_version: str | None = None   # e.g. v2-alpha-tpuv5-lite
    spot: bool = False
    setup: str | None = None             # default: pip install the checkout and jax[tpu]

    def _scope(self) -> list[str]:
        return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

    def ssh(self, command: str, worker: str = "all") -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, *self._scope(),
                f"--worker={worker}", f"--command={command}"]

    def describe_queued(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "describe", self.queued_resource,
                *self._scope(), "--format=value(state.state)"]

    def create_queued(self) -> list[str]:
        if not (self.accelerator_type and self.runtime_version):
            raise ValueError("creating a queued resource needs --accelerator_type and "
                             "--runtime_version")
        return (["gcloud", "compute", "tpus", "queued-resources", "create", self.queued_resource,
                 f"--node-id={self.name}", *self._scope(),
                 f"--accelerator-type={self.accelerator_type}",
                 f"--runtime-version={self.runtime_version}"] + (["--spot"] if self.spot else []))


@dataclasses.dataclass(frozen=True)
class Step:
    """One gcloud command of the plan: what it does, for which run, on which workers."""
    kind: str                   # queued-create, setup, prepare, train, eval
    argv: list[str]
    run: str | None = None
    stop: list[str] | None = None   # asks the step's processes to checkpoint and stop


class TpuLauncher:
    def __init__(self, grid: grid_lib.Grid, target: TpuTarget, workdir: str, *,
                 local_dir: str, runs: Sequence[grid_lib.Run] | None = None,
                 retry_failed: bool = False, skip_setup: bool = False,
                 runner: Callable[[list[str], str], int] | None = None,
                 query: Callable[[list[str]], tuple[int, str]] | None = None, out=None,
                 poll_s: float = 30.0, queue_timeout_s: float = 24 * 3600,
                 timeouts: runs_lib.Timeouts = runs_lib.Timeouts()):
        """`runner(argv, log_path) -> exit code` runs a long step with its output in a log;
        `query(argv) -> (exit code, stdout)` a short one. Both default to subprocesses.
        `timeouts`: how long the workers' processes wait for a silent peer and for each other
        at start-up (passed to every worker's trainer)."""
        rel = os.path.relpath(grid.path, grid_lib.REPO_ROOT)
        if rel.startswith(".."):
            raise ValueError(f"the TPU backend runs grids from the checkout on the workers; "
                             f"{grid.path} is outside the repository {grid_lib.REPO_ROOT}")
        self.grid, self.target, self.grid_rel = grid, target, rel.replace(os.sep, "/")
        self.workdir, self.local_dir = workdir, os.path.abspath(local_dir)
        self.runs = tuple(runs if runs is not None else grid.runs)
        self.retry_failed, self.skip_setup = retry_failed, skip_setup
        self.runner = runner or self._subprocess
        self.query = query or _query
        self.out = out or (lambda line: print(line, flush=True))
        self.poll_s, self.queue_timeout_s = poll_s, queue_timeout_s
        self.timeouts = timeouts
        self.commands = runs_lib.Commands(python=target.python,
                                          config_file="launch/grid_config.py")
        self._stopping = False
        self._step: Step | None = None
        self._current: subprocess.Popen | None = None

    # ---- the plan ------------------------------------------------------------------------------
    def _remote(self, argv: Sequence[str], env: str = "") -> str:
        return f"cd {self.target.repo_dir} && {env}{runs_lib.shell(argv)}"

    def setup_step(self) -> Step:
        command = self.target.setup or self._remote(
            [self.target.python, "-m", "pip", "install", "-q", "-e", ".", "jax[tpu]"])
        return Step("setup", self.target.ssh(command))

    def prepare_steps(self) -> list[Step]:
        firsts: dict[str, grid_lib.Run] = {}
        for r in self.runs:
            if not r.synthetic:
                firsts.setdefault(r.stage_key(), r)
        return [Step("prepare", self.target.ssh(self._remote(
            self.commands.prepare_argv(self.grid_rel, r.name))), r.name) for r in firsts.values()]

    def run_steps(self, run: grid_lib.Run) -> list[Step]:
        d = posixpath.join(self.workdir, "runs", run.name)
        pidfile = f"/tmp/imgsynth-{run.name}.pid"
        train = runs_lib.shell(self.commands.train_argv(self.grid_rel, run.name, d))
        # Background + wait, so that `stop` can signal exactly this run's process on each worker.
        env = "".join(f"{k}={v} " for k, v in {"IMGSYNTH_DISTRIBUTED": "auto",
                                                 **self.timeouts.env()}.items())
        command = (f"cd {self.target.repo_dir} && {{ {env}{train} & "
                   f"echo $! > {pidfile}; wait $!; }}")
        stop = self.target.ssh(f"kill -TERM $(cat {pidfile}) 2>/dev/null || true")
        return [Step("train", self.target.ssh(command), run.name, stop),
                Step("eval", self.target.ssh(self._remote(self.commands.evaluate_argv(d)),
                                             worker="0"), run.name)]

    def plan(self) -> list[Step]:
        steps = []
        if self.target.queued_resource:
            steps.append(Step("queued-create", self.target.create_queued()))
        if not self.skip_setup:
            steps.append(self.setup_step())
        steps += self.prepare_steps()
        for run in self.runs:
            steps += self.run_steps(run)
        return steps

    def dry_run(self) -> str:
        lines = []
        if self.target.queued_resource:
            lines += ["# if the queued resource does not exist yet, create it and wait for ACTIVE:",
                      shlex.join(self.target.describe_queued())]
        for step in self.plan():
            lines.append(f"# {step.kind}" + (f" {step.run}" if step.run else ""))
            lines.append(shlex.join(step.argv))
        return "\n".join(lines)

    # ---- running ---------------------------------------------------------------------------------
    def _subprocess(self, argv: list[str], log_path: str | None = None) -> int:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"\n=== {io.now()}: {shlex.join(argv)}\n".encode())
            log.flush()
            self._current = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                return self._current.wait()
            finally:
                self._current = None

    def _await_queued(self) -> None:
        rc, _ = self.query(self.target.describe_queued())
        if rc != 0:
            self.out(f"creating queued resource {self.target.queued_resource}")
            if self.runner(self.target.create_queued(), self._log("queued-resource")) != 0:
                raise RuntimeError(f"could not create queued resource; see "
                                   f"{self._log('queued-resource')}")
        deadline = time.monotonic() + self.queue_timeout_s
        while True:
            rc, state = self.query(self.target.describe_queued())
            if state == "ACTIVE":
                return
            if state in ("FAILED", "SUSPENDED"):
                raise RuntimeError(f"queued resource {self.target.queued_resource} is {state}")
            if time.monotonic() > deadline or self._stopping:
                raise RuntimeError(f"queued resource {self.target.queued_resource} not ACTIVE "
                                   f"(state {state or 'unknown'})")
            self.out(f"waiting for queued resource {self.target.queued_resource} ({state})")
            time.sleep(self.poll_s)

    def _log(self, name: str) -> str:
        return os.path.join(self.local_dir, "logs", f"{name}.log")

    def run(self) -> int:
        """Runs the plan; returns 0 (all done), 1 (some failed) or 130 (interrupted)."""
        os.makedirs(self.local_dir, exist_ok=True)
        state = runs_lib.LaunchState(self.local_dir, self.grid)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.target.queued_resource:
                self._await_queued()
            for step in ([] if self.skip_setup else [self.setup_step()]) + self.prepare_steps():
                if self._stopping:
                    return 130
                self.out(f"{step.kind} on all workers")
                if self.runner(step.argv, self._log(step.kind)) != 0:
                    self.out(f"{step.kind} failed; see {self._log(step.kind)}")
                    return 1
            failed = 0
            for run in self.runs:
                record = state.run(run.name)
                if not self.retry_failed and "failed" in (record.get("train"), record.get("eval")):
                    failed += 1
                    continue
                for step in self.run_steps(run):
                    if record.get(step.kind) == "done":
                        continue
                    if self._stopping:
                        return 130
                    self._step = step
                    self.out(f"{run.name}: {step.kind}")
                    rc = self.runner(step.argv, self._log(run.name))
                    if self._stopping:
                        state.update_run(run.name, **{step.kind: "pending"})
                        return 130
                    state.update_run(run.name, **{step.kind: "done" if rc == 0 else "failed"},
                                     returncode=rc)
                    if rc != 0:
                        failed += 1
                        tail = runs_lib.log_tail(self._log(run.name))
                        state.update_run(run.name, reason=runs_lib.failure_reason(tail, rc),
                                         log_tail=tail)
                        self.out(f"{run.name}: {step.kind} failed (exit {rc}); see "
                                 f"{self._log(run.name)}")
                        break
            return 1 if failed else 0
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def _on_signal(self, signum, frame) -> None:
        """Asks the running step's processes on every worker to checkpoint and stop."""
        if self._stopping:
            return
        self._stopping = True
        step = self._step
        self.out(f"\n{signal.Signals(signum).name}: stopping the current run on all workers")
        if step is not None and step.stop is not None:
            self.query(step.stop)
        elif self._current is not None:
            self._current.send_signal(signal.SIGINT)


def _query(argv: list[str]) -> tuple[int, str]:
    p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.strip()
