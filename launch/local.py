"""Local backend: every run in its own subprocess, `parallel` at a time, the cores divided.

Order: the shared pipeline stages (once per distinct data/autoencoder setting), then training, then
the evaluation of each run as soon as its training is done. A cooldown branch starts once its
trunk has the checkpoint it forks from (so it may run beside the trunk), and is blocked, with the
reason, when the trunk failed or is not launched. Runs added with `evaluate=False` (a trunk, an
lr sweep's runs) are trained only. Resumable: a done run is skipped, a
half-done one resumes from its checkpoint (train.py does that), a failed one is skipped unless
`retry_failed`. A failure is recorded (status.json, launch_status.json, the log tail) and the grid
goes on. Ctrl-C or SIGTERM is forwarded to the runs, which checkpoint and stop; every status is
left "pending" and the next launch resumes them. A second Ctrl-C kills them (they still resume,
from their last periodic checkpoint). With `processes` > 1 each training run is that many
processes of one JAX job on this machine (a pod's code paths; imgsynth/multihost.py).
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

from imgsynth import cli, io
from launch import grid as grid_lib, runs as runs_lib

EXIT_INTERRUPTED = 130


class LaunchError(RuntimeError):
    """The launcher cannot start (another launcher holds the workdir, ...)."""


def thread_env(threads: int) -> dict[str, str]:
    """Thread counts for one child: PJRT_NPROC sizes XLA's CPU thread pool; the rest cover
    the data loading (grain, TFDS) and any BLAS the child touches."""
    t = str(max(1, threads))
    return {"PJRT_NPROC": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t,
            "OPENBLAS_NUM_THREADS": t, "TF_NUM_INTRAOP_THREADS": t, "TF_NUM_INTEROP_THREADS": "1"}


# XLA:CPU allocates each step's temporary buffers (hundreds of MB) afresh, from worker threads.
# glibc serves those from per-thread arenas, which map and unmap them on every step, so every page
# of them faults in again: on the 2-core machine that was 28 % of an XS trunk's core time and
# 25 % of an S trunk's step (docs/benchmarks.md). One arena that neither maps nor trims keeps the
# pages. A value the user's environment already sets wins.
ALLOCATOR_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                 "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def core_slots(parallel: int, cores: Sequence[int]) -> list[tuple[int, ...] | None]:
    """Disjoint core sets, one per parallel slot (None: no pinning: one slot, or too few cores)."""
    cores = sorted(cores)
    per = len(cores) // parallel
    if parallel == 1 or per == 0:
        return [None] * parallel
    return [tuple(cores[i * per:(i + 1) * per]) for i in range(parallel)]


def available_cores() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


# ---- Children die with the launcher -------------------------------------------------------------
# A trainer outliving its launcher would be started a second time by the next launch. On Linux the
# kernel sends each child SIGTERM when the launcher dies, even by kill -9 (PR_SET_PDEATHSIG); the
# trainer checkpoints and stops as on pre-emption. Elsewhere the child's own watchdog
# (imgsynth.cli.watch_parent) polls its parent pid and does the same.

PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):   # not Linux
        return None


def die_with_parent_env() -> dict[str, str]:
    """The child's watchdog setting where the kernel cannot do it (no prctl)."""
    return {} if _prctl() is not None else {cli.WATCH_PARENT_ENV: str(os.getpid())}


def die_with_parent(parent: int) -> None:
    """preexec_fn: in the forked child, before exec, ask for SIGTERM when `parent` dies."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:   # it died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


@dataclasses.dataclass
class _Job:
    kind: str                      # "train", "eval" or "prepare"
    run: grid_lib.Run
    procs: list[subprocess.Popen]  # several: the processes of a multi-process training run
    slot: int
    log_path: str
    log_offset: int
    started: float

    def poll(self) -> int | None:
        """None while any process runs; then the first non-zero exit code, or 0."""
        codes = [p.poll() for p in self.procs]
        if None in codes:
            return None
        return next((c for c in codes if c), 0)

    def signal(self, sig: int) -> None:
        for p in self.procs:
            _signal_group(p, sig)

    def lost(self) -> str | None:
        """Which process of a multi-process job was lost, when it ended without saying so: one
        killed by a signal other than SIGABRT. (When the coordinator, process 0, dies, JAX's
        runtime aborts every other process at once, before it can write a status.)"""
        killed = [i for i, p in enumerate(self.procs) if len(self.procs) > 1
                  and p.returncode is not None and -p.returncode in set(signal.Signals) - {
                      signal.SIGABRT}]
        if not killed:
            return None
        how = ", ".join(f"{i} ({signal.Signals(-self.procs[i].returncode).name})" for i in killed)
        return (f"lost process {how} of {len(self.procs)}; the others were ended by JAX's "
                "distributed runtime. Rerun to resume from the last checkpoint every process "
                "completed")


class LocalLauncher:
    def __init__(self, grid: grid_lib.Grid, workdir: str, *, parallel: int = 1,
                 retry_failed: bool = False, commands: runs_lib.Commands = runs_lib.Commands(),
                 runs: Sequence[grid_lib.Run] | None = None, flops_per_s: float | None = None,
                 out: Callable[[str], None] | None = None, poll_s: float = 0.5,
                 progress_every_s: float = 30.0, cores: Sequence[int] | None = None,
                 evaluate: bool = True, processes: int = 1,
                 timeouts: runs_lib.Timeouts = runs_lib.Timeouts()):
        """`processes` > 1 trains each run as that many processes of one JAX job on this
        machine (a pod's code paths: collectives, a lost or pre-empted process), waiting for a
        silent peer and for each other at start-up as long as `timeouts` say."""
        if parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {parallel}")
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes, self.timeouts = processes, timeouts
        self.grid, self.workdir = grid, os.path.abspath(workdir)
        self.runs = tuple(runs if runs is not None else grid.runs)
        self.parallel, self.retry_failed, self.commands = parallel, retry_failed, commands
        self.flops_per_s, self.poll_s, self.progress_every_s = flops_per_s, poll_s, progress_every_s
        self.out = out or (lambda line: print(line, flush=True))
        self.cores = tuple(cores) if cores is not None else available_cores()
        self.threads = max(1, len(self.cores) // parallel)
        self.slots = core_slots(parallel, self.cores)
        self.evaluate = evaluate   # False: train only; a later launch evaluates the done runs
        self._stopping = self._killed = False
        self._active: list[_Job] = []
        self._finished_estimate = self._finished_elapsed = 0.0

    # ---- entry point ---------------------------------------------------------------------------
    def run(self) -> int:
        """Runs the grid; returns 0 (all done), 1 (some failed) or 130 (interrupted)."""
        os.makedirs(os.path.join(self.workdir, "runs"), exist_ok=True)
        try:
            lock = io.FileLock(os.path.join(self.workdir, ".launch"), blocking=False).__enter__()
        except io.LockedError as e:
            raise LaunchError(f"another launcher is running: {e} (Ctrl-C stops it)") from None
        with lock:
            self.state = runs_lib.LaunchState(self.workdir, self.grid)
            self.state.begin_launch()
            runs_lib.keep_tuned_lr(self.workdir, self.grid)
            old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                return self._run()
            finally:
                self.state.end_launch()
                for s, handler in old.items():
                    signal.signal(s, handler)

    def _run(self) -> int:
        self.t0 = time.monotonic()
        queue = collections.deque(self._plan())
        self._prepare_stages(queue)
        self._progress()
        last = time.monotonic()
        while True:
            while not self._stopping and queue and len(self._active) < self.parallel:
                job = self._next(queue)
                if job is None:
                    break
                self._start(*job)
                self._progress()
            if not self._active and (self._stopping or not queue):
                break
            time.sleep(self.poll_s)
            for job in list(self._active):
                rc = job.poll()
                if rc is not None:
                    self._active.remove(job)
                    if self._finish(job, rc):
                        self.state.update_run(job.run.name, eval="queued")
                        queue.appendleft(("eval", job.run))
                    self._progress()
            if time.monotonic() - last >= self.progress_every_s:
                self._progress()
                last = time.monotonic()
        self.out(runs_lib.status_table(runs_lib.status_rows(self.workdir, self.runs)))
        if self._stopping:
            self.out("stopped: every run is checkpointed or pending; launch again to resume")
            return EXIT_INTERRUPTED
        failed = [n for n, r in self.state.data["runs"].items() if n in {x.name for x in self.runs}
                  and (r.get("train") in ("failed", "blocked") or r.get("eval") == "failed")]
        return 1 if failed else 0

    # ---- what to do ----------------------------------------------------------------------------
    def _next(self, queue: collections.deque) -> tuple[str, grid_lib.Run] | None:
        """Takes the first job of `queue` that can start now (None: all wait for a trunk)."""
        for i, (kind, run) in enumerate(queue):
            ready = self._trunk_ready(run, queue) if kind == "train" and run.trunk else True
            if ready is not None:
                del queue[i]
                return (kind, run) if ready else self._next(queue)
        return None

    def _trunk_ready(self, run: grid_lib.Run, queue) -> bool | None:
        """A branch: True when its trunk has the checkpoint at its fork step (orbax renames a
        step's directory into place once complete) or is done; None while the trunk is queued or
        training; False (recorded as blocked, with the reason) otherwise."""
        d = runs_lib.run_dir(self.workdir, run.trunk)
        status = io.read_status(d)
        if (status["status"] == "done"
                or os.path.isdir(os.path.join(d, "checkpoints", str(run.fork_step)))):
            return True
        if (any(j.run.name == run.trunk for j in self._active)
                or any(k == "train" and r.name == run.trunk for k, r in queue)):
            return None
        trunk = self.state.run(run.trunk)
        reason = (f"trunk {run.trunk} {trunk['train']}: {trunk.get('reason') or status.get('reason')}"
                  if trunk.get("train") in ("failed", "blocked") else
                  f"trunk {run.trunk} has no checkpoint at step {run.fork_step} and is not "
                  f"launched (status {status['status']})")
        reason += "; launch again once the trunk is trained"
        io.write_status(runs_lib.run_dir(self.workdir, run.name), "pending", reason=reason)
        self.state.update_run(run.name, train="blocked", reason=reason)
        self.out(f"{run.name}: blocked: {reason}")
        return False

    def _wants_eval(self, run: grid_lib.Run) -> bool:
        d = runs_lib.run_dir(self.workdir, run.name)
        if not (self.evaluate and run.evaluate) or os.path.exists(os.path.join(d, "eval.json")):
            return False
        return self.retry_failed or self.state.run(run.name).get("eval") != "failed"

    def _plan(self) -> list[tuple[str, grid_lib.Run]]:
        todo = []
        for run in self.runs:
            d = runs_lib.run_dir(self.workdir, run.name)
            owner = runs_lib.grid_of(d)
            if owner is not None and owner != self.grid.name:
                self.state.update_run(run.name, train="blocked", reason=(
                    f"{d} holds a run of grid {owner!r}, not {self.grid.name!r}; use another "
                    "--workdir"))
                continue
            status = io.read_status(d)["status"]
            if status == "done":
                self.state.update_run(run.name, train="done")
                if self._wants_eval(run):
                    self.state.update_run(run.name, eval="queued")
                    todo.append(("eval", run))
            elif status == "failed" and not self.retry_failed:
                self.state.update_run(run.name, train="failed")
            else:
                self.state.update_run(run.name, train="queued")
                todo.append(("train", run))
        # Trunks first, the longest first: a trunk and the branches behind it are a grid's
        # longest chain, and one started last leaves the other cores idle at the end. The rest
        # keep the grid's order.
        todo.sort(key=lambda job: -job[1].own_flops if job[1].role == "trunk" else 0.0)
        return todo

    # ---- stages ----------------------------------------------------------------------------------
    def _prepare_stages(self, queue: collections.deque) -> None:
        """Runs `launch.prepare` once per stage key of the runs about to train, up to `parallel`
        keys at once, each on its share of the cores (stages two keys share, like the dataset,
        are built by one and waited for by the other); a failed stage blocks its runs
        (recorded) and the rest of the grid goes on."""
        groups: dict[str, list[grid_lib.Run]] = {}
        for kind, run in queue:
            if kind == "train" and not run.synthetic:
                groups.setdefault(run.stage_key(), []).append(run)
        pending, running, blocked = list(groups.items()), {}, set()
        last = time.monotonic()
        while pending or running:
            while pending and len(running) < self.parallel and not self._stopping:
                key, members = pending.pop(0)
                tag = hashlib.sha1(key.encode()).hexdigest()[:10]
                log_path = os.path.join(self.workdir, "stages", f"{tag}.log")
                self.out(f"stages {tag}: preparing data, autoencoders and instruments for "
                         f"{len(members)} runs ({members[0].paradigm}, {members[0].dataset})")
                self.state.update_stage(tag, setting=key, status="running", log=log_path)
                slot = None if len(groups) == 1 else self._free_slot()
                progress = log_path.removesuffix(".log") + ".progress.json"
                if os.path.exists(progress):
                    os.remove(progress)
                job = self._spawn("prepare", members[0], log_path, slot=slot,
                                  env={io.STAGE_PROGRESS_ENV: progress})
                self._active.append(job)
                running[tag] = job, members
            if self._stopping:
                pending.clear()
            time.sleep(self.poll_s)
            if time.monotonic() - last >= self.progress_every_s:
                last = time.monotonic()
                for tag, (job, _) in running.items():
                    line = stage_progress(job.log_path.removesuffix(".log") + ".progress.json")
                    self.out(f"stages {tag}: {line or 'building the data'}")
            for tag, (job, members) in list(running.items()):
                rc = job.poll()
                if rc is None:
                    continue
                del running[tag]
                self._active.remove(job)
                # Its core-time, for the grid's efficiency (benchmarks/study_efficiency.py).
                cost = {"seconds": time.monotonic() - job.started,
                        "cores": len(self.slots[job.slot] or self.cores) if job.slot >= 0
                        else len(self.cores)}
                if rc == 0:
                    self.state.update_stage(tag, status="done", reason=None, **cost)
                    continue
                tail = runs_lib.log_tail(job.log_path, job.log_offset)
                reason = ("interrupted" if self._stopping else runs_lib.failure_reason(tail, rc))
                self.state.update_stage(tag, status="failed", reason=reason, log_tail=tail,
                                        **cost)
                if not self._stopping:
                    self.out(f"stages {tag} failed: {reason} (log: {job.log_path})")
                    for run in members:
                        blocked.add(run.name)
                        self.state.update_run(run.name, train="blocked",
                                              reason=f"stage {tag} failed: {reason}; see "
                                                     f"{job.log_path}")
        kept = [(k, r) for k, r in queue if r.name not in blocked]
        queue.clear()
        queue.extend(kept)

    # ---- processes -------------------------------------------------------------------------------
    def _argv(self, kind: str, run: grid_lib.Run) -> list[str]:
        d = runs_lib.run_dir(self.workdir, run.name)
        if kind == "train":
            return self.commands.train_argv(self.grid.path, run.name, d)
        if kind == "eval":
            return self.commands.evaluate_argv(d)
        return self.commands.prepare_argv(self.grid.path, run.name)

    def _spawn(self, kind: str, run: grid_lib.Run, log_path: str, slot: int | None,
               env: dict[str, str] | None = None) -> _Job:
        argv = self._argv(kind, run)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        env = {**ALLOCATOR_ENV, **os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (grid_lib.REPO_ROOT, env.get("PYTHONPATH")) if p)
        cores = self.slots[slot] if slot is not None else None
        if slot is not None and self.parallel > 1:
            env.update(thread_env(self.threads))
        count = self.processes if kind == "train" else 1
        if count > 1:
            env.update(self.timeouts.env(), IMGSYNTH_NUM_PROCESSES=str(count),
                       IMGSYNTH_COORDINATOR=f"127.0.0.1:{free_port()}")
        with open(log_path, "ab") as log:   # every process of a job writes to the one log
            offset = log.tell()
            log.write(f"\n=== {kind} {io.now()}: {runs_lib.shell(argv)}\n".encode())
            log.flush()
            procs = [subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**env, **die_with_parent_env(),
                     **({"IMGSYNTH_PROCESS_ID": str(i)} if count > 1 else {})},
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
                start_new_session=True)   # Ctrl-C reaches the launcher only; it forwards it
                for i in range(count)]
        for proc in procs:
            if cores and hasattr(os, "sched_setaffinity"):
                try:   # before the child's first thread: Python start-up alone takes far longer
                    os.sched_setaffinity(proc.pid, cores)
                except OSError:
                    pass
        return _Job(kind, run, procs, slot if slot is not None else -1, log_path, offset,
                    time.monotonic())

    def _free_slot(self) -> int:
        used = {j.slot for j in self._active}
        return next(i for i in range(self.parallel) if i not in used)

    def _start(self, kind: str, run: grid_lib.Run) -> None:
        d = runs_lib.run_dir(self.workdir, run.name)
        job = self._spawn(kind, run, os.path.join(d, runs_lib.LOG_FILE), self._free_slot())
        self._active.append(job)
        self.state.update_run(run.name, **{"train" if kind == "train" else "eval": "running"})

    def _finish(self, job: _Job, rc: int) -> bool:
        """Records how a job ended (fixing status.json if the child could not); True when the run
        should be evaluated next."""
        run, d = job.run, runs_lib.run_dir(self.workdir, job.run.name)
        elapsed = time.monotonic() - job.started
        tail = runs_lib.log_tail(job.log_path, job.log_offset)
        if job.kind == "eval":
            if rc == 0 and os.path.exists(os.path.join(d, "eval.json")):
                self.state.update_run(run.name, eval="done", eval_reason=None, eval_s=elapsed)
                self._count(job, elapsed)
            elif self._stopping:
                self.state.update_run(run.name, eval="pending", eval_reason="interrupted")
            else:
                reason = runs_lib.failure_reason(tail, rc) if rc else "exit code 0 but no eval.json"
                self.state.update_run(run.name, eval="failed", eval_reason=reason, log_tail=tail)
                self.out(f"{run.name}: evaluation failed: {reason}")
            return False
        status = io.read_status(d)
        if status["status"] == "done":   # even if the child then died on the way out
            self.state.update_run(run.name, train="done", reason=None, train_s=elapsed,
                                  returncode=rc)
            self._count(job, elapsed)
            return self._wants_eval(run)
        if self._stopping:
            if status["status"] != "pending":   # killed before or while it could write it
                io.write_status(d, "pending", reason=(
                    f"interrupted by the launcher at step {status.get('step', 0)}; launch again "
                    "to resume from the last checkpoint"), step=status.get("step", 0))
            self.state.update_run(run.name, train="pending", reason="interrupted", returncode=rc)
            return False
        if rc == 0 and status["status"] == "pending":   # pre-empted by a signal from elsewhere
            self.state.update_run(run.name, train="pending", reason=status.get("reason"),
                                  returncode=0)
            return False
        reason = job.lost() or runs_lib.failure_reason(tail, rc)
        if status["status"] == "failed" and status.get("reason"):
            reason = f"exit code {rc}: {status['reason']}"
        else:
            io.write_status(d, "failed", reason=reason, step=status.get("step", 0))
        self.state.update_run(run.name, train="failed", reason=reason, log_tail=tail,
                              returncode=rc)
        self.out(f"{run.name}: FAILED ({reason}); log: {job.log_path}")
        return False

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            self.out(f"\n{name}: stopping; {len(self._active)} running jobs checkpoint and stop "
                     "(send it again to kill them)")
            for job in self._active:
                job.signal(signal.SIGINT)
        elif not self._killed:
            self._killed = True
            self.out(f"\n{name} again: killing {len(self._active)} jobs")
            for job in self._active:
                job.signal(signal.SIGKILL)

    # ---- progress --------------------------------------------------------------------------------
    def _estimate(self, kind: str, run: grid_lib.Run) -> float | None:
        total = grid_lib.estimate_seconds(run, self.flops_per_s)
        if total is None:
            return None
        evaluation = (grid_lib.eval_seconds(run) if self.flops_per_s is None
                      and run.evaluate else 0.0)
        return evaluation if kind == "eval" else total - evaluation

    def _step_of(self, run: grid_lib.Run) -> int:
        return runs_lib.last_metrics(runs_lib.run_dir(self.workdir, run.name)).get("step") or 0

    def _count(self, job: _Job, elapsed: float) -> None:
        estimate = self._estimate(job.kind, job.run)
        if estimate:
            self._finished_estimate += estimate
            self._finished_elapsed += elapsed

    def _eta(self) -> float | None:
        remaining = 0.0
        for job in self._active:
            est = self._estimate(job.kind, job.run)
            if est is None:
                return None
            done = 0.0
            if job.kind == "train":
                step = self._step_of(job.run)
                done = min(1.0, step / max(job.run.steps, 1))
            remaining += est * (1 - done)
        for run in self.runs:
            r = self.state.run(run.name)
            if any(j.run is run for j in self._active):
                continue
            if r.get("train") == "queued":
                est = grid_lib.estimate_seconds(run, self.flops_per_s)
            elif r.get("eval") == "queued":
                est = self._estimate("eval", run)
            else:
                continue
            if est is None:
                return None
            remaining += est
        # Parallel runs share the cores: calibrate by how long finished jobs really took.
        ratio = (self._finished_elapsed / self._finished_estimate if self._finished_estimate
                 else float(self.parallel))
        return remaining * ratio / self.parallel

    def _progress(self) -> None:
        runs = self.state.data["runs"]
        names = {r.name for r in self.runs}
        trained = sum(1 for n, r in runs.items() if n in names and r.get("train") == "done")
        evaluated = sum(1 for n, r in runs.items() if n in names and r.get("eval") == "done")
        failed = sum(1 for n, r in runs.items() if n in names
                     and (r.get("train") in ("failed", "blocked") or r.get("eval") == "failed"))
        active = []
        for job in self._active:
            if job.kind == "train":
                step = self._step_of(job.run)
                active.append(f"{job.run.name} {step}/{job.run.steps}")
            else:
                active.append(f"{job.run.name} ({job.kind})")
        elapsed = grid_lib.format_duration(time.monotonic() - self.t0)
        self.out(f"[{elapsed}] trained {trained}/{len(self.runs)}, evaluated {evaluated}, "
                 f"failed {failed} | running: {', '.join(active) or '–'} | "
                 f"ETA {grid_lib.format_duration(self._eta())}")


def stage_progress(path: str) -> str | None:
    """'alignment 340/1000 steps, 2m10s in, ETA 4m13s' from a preparation's progress file (the
    stage training now, its run folder, its steps, its start) and that folder's metrics.jsonl;
    None before the first stage trains (the data is being built)."""
    p = io.read_json(path)
    if not p:
        return None
    step = runs_lib.last_metrics(p["run_dir"]).get("step") or 0
    total, elapsed = p["total_steps"], time.time() - p["started"]
    eta = (f"ETA {grid_lib.format_duration(elapsed / step * (total - step))}" if step
           else "starting (compiling, reading the data)")
    return f"{p['stage']} {step}/{total} steps, {grid_lib.format_duration(elapsed)} in, {eta}"


def free_port() -> int:
    """A TCP port free on this machine now, for a multi-process job's coordinator."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
