"""Faults between the processes of a multi-process job: a lost peer, a pre-empted host, and
processes started with settings that disagree.

A collective waits forever for a process that is gone, so a job that lost one host would hold
the rest of the pod for nothing. JAX's distributed runtime gives part of the answer: its
heartbeats abort the survivors `2 × peer timeout` after a process stops answering (the backstop
here), and its preemption sync point lets every process agree on the step to checkpoint at after
one of them gets SIGTERM. What it does not do is say why: an abort leaves the run `running`. The
`Watchdog` below exchanges heartbeats through the coordinator's key-value store and, once a peer
has been silent for the peer timeout, records the run as failed (naming the lost process and the
checkpoint a rerun starts from) and ends the process. Every process also keeps
`processes/<i>.json` in the run directory, so `--status` can say which process is missing.

Timeouts come from the environment the launchers set: IMGSYNTH_PEER_TIMEOUT_S (default 20) and
IMGSYNTH_INIT_TIMEOUT_S (how long processes wait for each other at start-up; default 300).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

import jax
from jax.experimental import multihost_utils

from imgsynth import config as config_lib, io

# The launchers set these (launch/runs.py names them too: it imports no jax).
PEER_TIMEOUT_ENV, INIT_TIMEOUT_ENV = "IMGSYNTH_PEER_TIMEOUT_S", "IMGSYNTH_INIT_TIMEOUT_S"
# 20 s: the watchdog must speak before a CPU job's gloo collectives give up on the lost peer
# (about 30 s), which aborts the survivor before it can record why.
DEFAULT_PEER_TIMEOUT_S, DEFAULT_INIT_TIMEOUT_S = 20, 300
PROCESSES_DIR = "processes"
LOST_EXIT = 1
_KEY = "imgsynth"
_declared: dict = {}   # what this process was told about the job (initialize's arguments)


def _seconds(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        value = int(text) if text else default
    except ValueError:
        value = 0
    if value < 1:
        raise config_lib.ConfigError(f"{name}={text!r}: a whole number of seconds, at least 1")
    return value


def peer_timeout_s() -> int:
    return _seconds(PEER_TIMEOUT_ENV, DEFAULT_PEER_TIMEOUT_S)


def initialize_arguments(coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> dict:
    """Keyword arguments of `jax.distributed.initialize`: the job's description (None: JAX
    detects it) and the timeouts. JAX's heartbeat timeout is twice the watchdog's, so the
    watchdog, which says why, acts first."""
    if num_processes is not None and not 0 <= (process_id or 0) < num_processes:
        raise config_lib.ConfigError(f"process id {process_id} is not in 0..{num_processes - 1} "
                                     f"of a job of {num_processes} processes")
    peer = peer_timeout_s()
    _declared.update(coordinator=coordinator, num_processes=num_processes, peer_timeout_s=peer)
    described = {"coordinator_address": coordinator, "num_processes": num_processes,
                 "process_id": process_id}
    return {**{k: v for k, v in described.items() if v is not None},
            "initialization_timeout": _seconds(INIT_TIMEOUT_ENV, DEFAULT_INIT_TIMEOUT_S),
            "heartbeat_timeout_seconds": 2 * peer}


def _client():
    from jax._src import distributed   # the runtime client JAX's own multihost_utils uses
    return distributed.global_state.client


def multiprocess() -> bool:
    return jax.process_count() > 1 and _client() is not None


# ---- Same settings everywhere --------------------------------------------------------------------

def _agree(topic: str, mine: dict) -> tuple[int, dict, dict] | None:
    """Publishes this process's `mine` and compares: process 0 with every other process, the
    others with process 0, so both sides of a difference see it. Uses only the coordinator's
    key-value store (no collective, no backend). Returns (other process, its dict, process 0's)
    for the first difference, or None."""
    from jax._src import distributed
    client, me = _client(), distributed.global_state.process_id
    client.key_value_set(f"{_KEY}/{topic}/{me}", json.dumps(mine, sort_keys=True))
    wait_ms = 1000 * _seconds(INIT_TIMEOUT_ENV, DEFAULT_INIT_TIMEOUT_S)

    def read(i: int) -> dict:
        return json.loads(client.blocking_key_value_get(f"{_KEY}/{topic}/{i}", wait_ms))

    if me != 0:
        zero = read(0)
        return (me, mine, zero) if zero != mine else None
    for i in range(1, distributed.global_state.num_processes):
        theirs = read(i)
        if theirs != mine:
            return i, theirs, mine
    return None


def check_job() -> None:
    """Right after joining, before any device is touched: every process must have been started
    for the same number of processes, the same coordinator address and the same peer timeout
    (a process told of 3 processes in a job of 2 would wait for the third one forever)."""
    from jax._src import distributed
    mine = {"processes": _declared.get("num_processes") or distributed.global_state.num_processes,
            "coordinator": _declared.get("coordinator"),
            "peer_timeout_s": _declared.get("peer_timeout_s")}
    differ = _agree("job", mine)
    if differ is not None:
        i, theirs, zero = differ
        key = next(k for k in mine if theirs[k] != zero[k])
        raise config_lib.ConfigError(
            f"process {i} was started with {key} {theirs[key]!r}, process 0 with {zero[key]!r}; "
            "start every process of a job with the same settings")


def check_consistent(config) -> None:
    """Refuses, on every process and before any step, a job whose processes were given
    different run configs, naming the keys."""
    if not multiprocess():
        return
    differ = _agree("config", json.loads(config.to_json_best_effort(sort_keys=True)))
    if differ is not None:
        i, theirs, zero = differ
        raise config_lib.ConfigError(
            f"process {i}'s config differs from process 0's in "
            f"{sorted(_differing_keys(theirs, zero))}; start every process with the same config")


def _differing_keys(a: dict, b: dict, prefix: str = ""):
    """Dotted paths of the leaves in which two config dicts differ."""
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _differing_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            yield prefix + key


# ---- Pre-emption: one step for every process -------------------------------------------------

def stop_agreed(step: int) -> bool:
    """Whether every process is to checkpoint `step` and stop: JAX's preemption sync point, which
    a SIGTERM to any one process starts (call it once per step, on every process)."""
    return multihost_utils.reached_preemption_sync_point(step)


# ---- Each process's own record ------------------------------------------------------------------

def record(workdir: str, status: str, **fields) -> None:
    """`processes/<i>.json` of this process of a multi-process job: its status, step, pid, host
    and heartbeat (what `--status` compares across processes). A no-op for one process."""
    if not multiprocess():
        return
    i = jax.process_index()
    io.write_json(os.path.join(workdir, PROCESSES_DIR, f"{i}.json"), {
        "status": status, "process": i, "processes": jax.process_count(), "pid": os.getpid(),
        "host": socket.gethostname(), "heartbeat": time.time(), "updated": io.now(), **fields})


# ---- Lost peers ---------------------------------------------------------------------------------

class Watchdog:
    """Ends this process, with status `failed` naming the lost process, once a peer has sent no
    heartbeat for the peer timeout (or the coordinator, which relays them, is unreachable that
    long). `progress()` -> (step reached, step a rerun resumes from) for the status."""

    def __init__(self, workdir: str, progress: Callable[[], tuple[int, int]]):
        self.workdir, self.progress = workdir, progress
        self.timeout = _declared.get("peer_timeout_s") or peer_timeout_s()
        self.interval = min(2.0, max(0.2, self.timeout / 10))
        self._armed, self._halt = threading.Event(), threading.Event()
        self._thread = None

    def start(self) -> None:
        """Judges peers from now on. The heartbeats go on after `stop` until this process
        exits (before JAX's own shutdown), so a peer still finishing never takes it for lost."""
        if not multiprocess():
            return
        self._armed.set()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="peer-watchdog")
        self._thread.start()
        atexit.register(self._exit)

    def stop(self) -> None:
        self._armed.clear()

    def _exit(self) -> None:
        self._halt.set()
        self._thread.join()

    def wait_for_verdict(self) -> None:
        """After a runtime error in a collective: gives the watchdog the time to find a lost peer
        (it then ends the process itself) before the error is reported as the cause."""
        if self._armed.is_set():
            time.sleep(self.timeout + 3 * self.interval)

    def _watch(self) -> None:
        client, me, count = _client(), jax.process_index(), jax.process_count()
        start = time.monotonic()
        beats, seen, reached, beat = {}, {i: start for i in range(count)}, start, 0
        while not self._halt.wait(self.interval):
            now, beat = time.monotonic(), beat + 1
            try:
                client.key_value_set(f"{_KEY}/beat/{me}", str(beat), allow_overwrite=True)
                entries = dict(client.key_value_dir_get(f"{_KEY}/beat/"))
                reached = now
            except Exception:   # noqa: BLE001 - the coordinator does not answer
                entries = {}
            for key, value in entries.items():
                i = int(key.rsplit("/", 1)[-1])
                if beats.get(i) != value:
                    beats[i], seen[i] = value, now
            seen[me] = now
            if now - reached > self.timeout:
                lost = [0]   # the coordinator relays the heartbeats: it is the one gone
            else:
                lost = [i for i in range(count) if now - seen[i] > self.timeout]
            if lost and self._armed.is_set():
                self._lost(lost, me, count)

    def _lost(self, lost: list[int], me: int, count: int) -> None:
        step, resume = self.progress()
        names = ", ".join(str(i) for i in lost)
        reason = (f"lost process {names} of {count} (no heartbeat for {self.timeout} s) at step "
                  f"{step}; process {me} stopped. Rerun to resume from step {resume}, the last "
                  "checkpoint every process completed")
        print(f"error: {reason}", file=sys.stderr, flush=True)
        logging.error(reason)
        survivors = [i for i in range(count) if i not in lost]
        if me == min(survivors):   # one survivor records it, process 0 if it is alive
            io.write_json(os.path.join(self.workdir, io.STATUS_FILE), {
                "status": "failed", "reason": reason, "updated": io.now(), "step": step,
                "resume_step": resume, "lost_processes": lost})
        record(self.workdir, "failed", step=step, reason=reason)
        os._exit(LOST_EXIT)   # a collective may hold the main thread forever; so would shutdown
