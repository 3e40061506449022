"""The one training engine: generators, autoencoders, the judge and the alignment model all train here.

A caller hands over a `Task` — how to build the model, its loss, a checkpointable train iterator,
the number of steps — and `run` does the rest the same way for all of them: sharded state, a
jitted update with donated buffers, metrics fetched one step late, evaluations, orbax checkpoints
holding the data iterator's position, resume, SIGTERM, status.json (with what the process cost),
MFU and the persistent compilation cache. So every model of the suite resumes after pre-emption
and logs the same rows.

Sections: run files · mesh · model and optimizer · checkpoint · evals · loop.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import optax
from flax import nnx

from imgsynth import (checkpoint as ckpt_lib, config as config_lib, io, multihost, optim, perf,
                      sharding, summaries)

METRICS_FILE, CONFIG_FILE, SNAPSHOTS = "metrics.jsonl", "config.json", "ema_snapshots"


class NonFiniteLoss(FloatingPointError):
    pass


@dataclasses.dataclass
class Task:
    """What one trainer asks of the engine.

    `loss(model, batch, rng) -> (value, metrics)`; `train_iter()` opens the checkpointable data
    iterator (called only once the run is known to need training); `evaluate(state, graphdef,
    mesh) -> dict` of `eval/…` values (at `eval_every_steps`, keep steps and the end);
    `finish(state, graphdef) -> dict` runs once after the last step, before the run is marked
    done (an autoencoder fits its scale and writes its weights there), and its values are logged
    as a last row. `flops_per_step` > 0 turns on MFU and cumulative FLOPs in the rows;
    `optimizer` = (tx, schedule) replaces the config's AdamW. `fork` = (run directory, step): a
    run without a checkpoint of its own starts from that run's checkpoint at `step` — params,
    EMA, optimizer state, step and data position — with that run's rows up to `step` as its own
    history (a cooldown branch of a constant-rate trunk). At each of `snapshot_steps` the
    state's averages (`state["ema"]`, parameters only) are saved to `<workdir>/ema_snapshots`
    for the post-hoc EMA (`imgsynth.phema`); a fork copies its trunk's up to the fork step.
    """
    name: str
    build: Callable[[], nnx.Module]
    loss: Callable
    train_iter: Callable[[], Any]
    total_steps: int
    keep_steps: Sequence[int] = ()
    flops_per_step: float = 0.0
    first_row: dict = dataclasses.field(default_factory=dict)
    evaluate: Callable | None = None
    finish: Callable | None = None
    optimizer: tuple[optax.GradientTransformation, optax.Schedule] | None = None
    fork: tuple[str, int] | None = None
    snapshot_steps: Sequence[int] = ()


# ---- Run files ----------------------------------------------------------------------------------

def check_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuses a workdir that holds a run with another config, finished or not: resuming with
    changed hyper-parameters would silently mix two runs in one set of curves."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise config_lib.ConfigError(f"--workdir={workdir} is a file, not a directory")
    old = io.read_json(os.path.join(workdir, CONFIG_FILE))
    new = json.loads(config.to_json_best_effort(sort_keys=True))
    if old is not None and old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise config_lib.ConfigError(
            f"{workdir} holds a run with a different config (keys {changed}); use a new "
            "--workdir or restore the original config")


class MetricsLog:
    """metrics.jsonl: one JSON object per row (process 0 only); non-finite values → null."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, METRICS_FILE)

    def write(self, row: dict) -> None:
        if io.is_writer():
            with io.names_full_disk(self.path), open(self.path, "a") as f:
                f.write(json.dumps({k: io.finite_or_none(v) for k, v in row.items()},
                                   sort_keys=True) + "\n")

    def rows(self) -> list[dict]:
        """Every complete row; a half-written last line (a kill mid-write) is skipped."""
        if not os.path.exists(self.path):
            return []
        out = []
        with open(self.path) as f:
            lines = f.read().split("\n")
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                if line.strip() and i < len(lines) - 1:
                    raise ValueError(f"{self.path} line {i + 1} is not JSON") from None
                if line.strip():
                    logging.warning("%s: dropping a half-written last line", self.path)
        return out

    def truncate_after(self, step: int) -> None:
        """Keeps rows up to `step` (the checkpoint a run restarts from; -1 drops every row)."""
        if io.is_writer() and os.path.exists(self.path):
            rows = [r for r in self.rows() if r.get("step", 0) <= step]
            io.atomic_write(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


COMPILATION_CACHE = "jax-compilation-cache"


def use_compilation_cache(config: ml_collections.ConfigDict) -> None:
    """JAX's persistent compilation cache in `<cache_dir>/jax-compilation-cache`, for every
    program a training or evaluation process compiles, however short (a run's small programs add
    up): a rerun, or a run whose programs another process compiled, starts its first step without
    compiling. A directory already set (JAX_COMPILATION_CACHE_DIR, the tests') is kept, and a
    config without `cache_dir` changes nothing. An entry another process is still writing reads
    as a miss (JAX warns and compiles)."""
    if not config.get("cache_dir") or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(
        os.path.abspath(os.path.expanduser(config.cache_dir)), COMPILATION_CACHE))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def finished(workdir: str) -> dict | None:
    """The row a finished run returns ({'step', 'already_done'}), or None if it is not done."""
    status = io.read_status(workdir)
    if status["status"] != "done":
        return None
    logging.info("%s is already done (step %s); nothing to do", workdir, status.get("step"))
    print(f"{workdir}: run already done at step {status.get('step')}; nothing to do.")
    return {"step": status.get("step"), "already_done": True}


# ---- The engine ---------------------------------------------------------------------------------

def run(config: ml_collections.ConfigDict, workdir: str, task: Task) -> dict:
    """Trains (or resumes) `task` in `workdir`; returns the last metrics row.

    `config` supplies what every trainer shares: seed, global_batch_size, mesh, optimizer,
    ema (power-function profiles) or ema_decay, log/eval/checkpoint intervals, keep_checkpoints,
    peak_flops_per_s.
    """
    check_config(workdir, config)
    multihost.check_consistent(config)   # every process of a job: the same settings
    done = finished(workdir)
    if done:
        return done
    use_compilation_cache(config)

    # ---- Mesh, run files ----------------------------------------------------------------------
    mesh = sharding.make_mesh(config.get("mesh", (-1, 1, 1)))
    config_lib.validate(config, data_parallel=sharding.data_parallel_size(mesh),
                        tensor_parallel=mesh.shape["tensor"])
    os.makedirs(workdir, exist_ok=True)
    # One owner per run: a second trainer (a relaunch while the first still runs) is refused.
    # Only process 0 takes it; the other hosts of a multi-host job share its run.
    owner = io.FileLock(os.path.join(workdir, "run"), blocking=False)
    with owner if io.is_writer() else contextlib.nullcontext():
        return _run(config, workdir, task, mesh)


def _run(config, workdir: str, task: Task, mesh) -> dict:
    if io.is_writer() and not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        io.write_json(os.path.join(workdir, CONFIG_FILE),
                      json.loads(config.to_json_best_effort(sort_keys=True)))
    log = MetricsLog(workdir)
    start, row = 0, {"step": 0}
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=config.get("keep_checkpoints", 2),
                                         keep_steps=task.keep_steps)
    snapshots = _Snapshots(workdir, task.snapshot_steps)
    writer = summaries.ScalarWriter(workdir, enabled=io.is_writer())
    stop = _StopFlag()
    watchdog = multihost.Watchdog(workdir, lambda: (row.get("step", start),
                                                    checkpointer.latest_step() or 0))
    try:
        watchdog.start()   # from here a lost peer ends the job, saying so (imgsynth/multihost.py)
        # ---- Model, optimizer, sharded state, update step ------------------------------------
        model = sharding.create_sharded(task.build, mesh)
        graphdef, params = nnx.split(model)
        init_state, train_step, inputs = optim.make_update(
            config, task.loss, graphdef, task.total_steps, optimizer=task.optimizer)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
            state = jax.jit(init_state)(params)
            state_shardings = jax.tree.map(lambda x: x.sharding, state)
            step_fn = jax.jit(train_step, donate_argnums=(0,),
                              in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
                              out_shardings=(state_shardings, None))

        # ---- Checkpoint ----------------------------------------------------------------------
        train_iter = task.train_iter()
        start, state = checkpointer.restore_latest(ckpt_lib.abstract(state), train_iter,
                                                   fallback=state)
        log.truncate_after(start if start else -1)   # rows past the restored step go, always
        if start:
            logging.info("resumed from step %d", start)
        elif task.fork is not None:
            start, state = _fork(task.fork, ckpt_lib.abstract(state), train_iter, log)
            snapshots.copy_from(task.fork[0], start)
        elif task.first_row:
            log.write({"step": 0, **task.first_row})
        row = {"step": start}
        heartbeat = _Heartbeat(workdir, start)
        timing = {"start": perf.process_start(), "first_step": None,
                  "steps": task.total_steps - start}

        # ---- Loop ----------------------------------------------------------------------------
        flops_per_step = task.flops_per_step
        peak = perf.training_peak(config) if flops_per_step else 0.0
        window = _Window(start)
        pending = None
        every = lambda key, default: config.get(key) or default   # noqa: E731
        log_every = every("log_every_steps", 50)
        eval_every = every("eval_every_steps", 10 ** 12)
        save_every = every("checkpoint_every_steps", 500)
        logging.info("training %s for %d steps (%.3g FLOPs/step)", task.name, task.total_steps,
                     flops_per_step)

        def finish_row(step, metrics) -> dict:
            """Fetches a step's metrics (the device has moved on) and turns them into a row."""
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not math.isfinite(metrics["train/loss"]):
                raise NonFiniteLoss(f"non-finite training loss ({metrics['train/loss']}) at step {step}")
            out = {"step": step, "examples_seen": step * config.global_batch_size, **metrics}
            if flops_per_step:
                step_s = window.step_time(step)
                out.update({"flops/train_cumulative": step * flops_per_step,
                            "perf/step_time_s": step_s, "perf/mfu": flops_per_step / step_s / peak,
                            "perf/images_per_s": config.global_batch_size / step_s})
            return out

        def write(row):
            log.write(row)
            writer.write_scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

        with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
            if start < task.total_steps:
                first = sharding.to_global(next(train_iter), mesh)
                compiled = step_fn.lower(state, first, inputs).compile()
                logging.info("compiled the update step; memory: %s", compiled.memory_analysis())
            window.restart(start)
            for step in range(start + 1, task.total_steps + 1):
                batch = first if step == start + 1 else sharding.to_global(next(train_iter), mesh)
                state, metrics = compiled(state, batch, inputs)
                if step == start + 1:   # one wait, for the start-up time in the run's record
                    jax.block_until_ready(metrics)
                    timing["first_step"] = time.time()
                heartbeat.beat()
                if pending is not None:   # the previous step's metrics: the host never stalls
                    row = finish_row(*pending)
                    if row["step"] % log_every == 0:
                        write(row)
                        window.restart(row["step"])
                pending = (step, metrics)
                last = step == task.total_steps
                stopping = stop.at(step)
                save = step % save_every == 0 or step in task.keep_steps or last or stopping
                snapshots.save(step, state["ema"])   # first: a resumed run never skips one
                evaluate_now = task.evaluate is not None and (
                    step % eval_every == 0 or step in task.keep_steps or last)
                if save or evaluate_now:
                    row = finish_row(*pending)   # checked finite before anything is saved
                    pending = None
                    if evaluate_now:
                        row.update(task.evaluate(state, graphdef, mesh))
                    write(row)
                    if save:
                        checkpointer.save(step, state, train_iter)
                        heartbeat.beat(saved=step)
                    window.restart(step)
                if stopping:
                    io.write_status(workdir, "pending", reason=f"pre-empted at step {step}; run "
                                    "the same command again to resume", step=step)
                    multihost.record(workdir, "pending", step=step)
                    return row
        if task.finish is not None:
            final = task.finish(state, graphdef)
            write({"step": task.total_steps, **final})
            row.update(final)
    except BaseException as e:
        if isinstance(e, jax.errors.JaxRuntimeError):   # a collective with a peer gone?
            watchdog.wait_for_verdict()
        resume = checkpointer.latest_step() or 0
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:2000]   # one line
        io.write_status(workdir, "failed", reason=reason,
                        step=row.get("step", start), resume_step=resume)
        raise
    finally:
        watchdog.stop()
        checkpointer.close()
        snapshots.close()
        writer.close()
        stop.restore()
    # What this process cost (benchmarks/study_efficiency.py): from its start, so start-up counts.
    timing.update(end=time.time(), cores=perf.cores(), peak_flops_per_s=peak,
                  flops=timing["steps"] * flops_per_step)
    io.write_status(workdir, "done", step=task.total_steps, timing=timing)
    multihost.record(workdir, "done", step=task.total_steps)
    return row


def _fork(fork: tuple[str, int], abstract_state, train_iter, log: MetricsLog) -> tuple[int, Any]:
    """The state and data position of run `fork[0]` at step `fork[1]`, and its rows up to there."""
    trunk, step = fork
    source = ckpt_lib.Checkpointer(os.path.join(trunk, "checkpoints"), read_only=True)
    try:
        if not source.has_step(step):
            raise FileNotFoundError(f"{trunk} has no checkpoint at step {step} to fork from")
        state = source.restore(abstract_state, train_iter, step)
    finally:
        source.close()
    for row in MetricsLog(trunk).rows():
        if row.get("step", 0) <= step:
            log.write(row)
    logging.info("forked from %s at step %d", trunk, step)
    return step, state


class _Snapshots:
    """The averages at the steps a run snapshots them, through orbax like every checkpoint
    (written to a temporary name, then renamed; never pruned). A step already on disk is kept:
    a resumed run recomputes it bit for bit."""

    def __init__(self, workdir: str, steps: Sequence[int]):
        self.steps = frozenset(steps)
        self.store = None
        if self.steps:
            self.store = ckpt_lib.Checkpointer(os.path.join(workdir, SNAPSHOTS), max_to_keep=None)

    def save(self, step: int, averages) -> None:
        if step in self.steps and not self.store.has_step(step):
            self.store.save(step, averages)

    def copy_from(self, trunk: str, fork_step: int) -> None:
        """The trunk's snapshots at steps ≤ `fork_step`, hard-linked: a branch's averages share
        its past (by process 0 alone: a file operation, not a collective save)."""
        if (self.store is None or not io.is_writer()
                or not os.path.isdir(os.path.join(trunk, SNAPSHOTS))):
            return
        source = ckpt_lib.Checkpointer(os.path.join(trunk, SNAPSHOTS), read_only=True)
        try:
            for step in source.all_steps():
                if step <= fork_step and not self.store.has_step(step):
                    self.store.link_step(source.directory, step)
        finally:
            source.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class _Window:
    """Average step time since the last restart (logging, evals and saves excluded)."""

    def __init__(self, step: int):
        self.restart(step)

    def restart(self, step: int) -> None:
        self.step, self.t = step, time.perf_counter()

    def step_time(self, step: int) -> float:
        return (time.perf_counter() - self.t) / max(step - self.step, 1)


class _Heartbeat:
    """status.json of a running trainer: pid, host, the step it would resume from and a heartbeat
    (epoch seconds, refreshed at least every io.HEARTBEAT_S of training and at each checkpoint),
    so `--status` tells a live run from one whose process is gone."""

    def __init__(self, workdir: str, step: int):
        self.workdir, self.running = workdir, {"pid": os.getpid(), "host": socket.gethostname()}
        self.beat(saved=step)

    def beat(self, saved: int | None = None) -> None:
        if saved is None and time.monotonic() - self.t < io.HEARTBEAT_S:
            return
        if saved is not None:
            self.step = saved
        self.t = time.monotonic()
        io.write_status(self.workdir, "running", step=self.step, heartbeat=time.time(),
                        **self.running)
        multihost.record(self.workdir, "running", step=self.step)


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop cleanly (pre-emption).

    With several processes, one signalled process must not stop alone: SIGTERM is left to JAX's
    preemption notifier (installed by `jax.distributed.initialize`) and SIGINT is passed on to
    it, and `at(step)` is then the step every process agreed on."""

    def __init__(self):
        self.requested = False
        self.multiprocess = multihost.multiprocess()
        self._old = {}
        for sig in (signal.SIGINT,) if self.multiprocess else (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread
                pass

    def _handle(self, signum, frame):
        if self.multiprocess:
            os.kill(os.getpid(), signal.SIGTERM)
        self.requested = True

    def at(self, step: int) -> bool:
        """Whether to checkpoint `step` and stop; called once per step."""
        return multihost.stop_agreed(step) if self.multiprocess else self.requested

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
