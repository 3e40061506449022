"""What every backend shares: the commands a run needs, its files, and the grid's own status.

A run directory is `WORKDIR/runs/<run>/` (config.json, status.json, metrics.jsonl, checkpoints,
eval.json, written by train/evaluate) plus `launch.log`, the output of every attempt. The launcher
keeps `WORKDIR/launch_status.json`: per run the last outcome of training and evaluation, and the
reason and log tail of a failure. It never calls into JAX, so it can run on a login node.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence

from imgsynth import io
from launch import grid as grid_lib

CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grid_config.py")
STATE_FILE = "launch_status.json"
LOG_FILE = "launch.log"
TAIL_LINES = 25
PROCESSES_DIR = "processes"   # a multi-process run's per-process records


@dataclasses.dataclass(frozen=True)
class Commands:
    """The argv of the programs a run needs. Tests swap in fakes; remote backends change paths."""
    python: str = sys.executable
    train: tuple[str, ...] = ("-m", "imgsynth.train")
    evaluate: tuple[str, ...] = ("-m", "imgsynth.evaluate")
    prepare: tuple[str, ...] = ("-m", "launch.prepare")
    config_file: str = CONFIG_FILE

    def config_flag(self, grid_path: str, run: str) -> str:
        if "," in grid_path or "," in run:
            raise ValueError(f"grid path {grid_path!r} and run name {run!r} may not contain ','")
        return f"--config={self.config_file}:grid={grid_path},run={run}"

    def train_argv(self, grid_path: str, run: str, run_dir: str) -> list[str]:
        return [self.python, *self.train, self.config_flag(grid_path, run), f"--workdir={run_dir}"]

    def compile_argv(self, grid_path: str, run: str) -> list[str]:
        return [self.python, *self.train, self.config_flag(grid_path, run), "--compile_only"]

    def evaluate_argv(self, run_dir: str) -> list[str]:
        return [self.python, *self.evaluate, f"--workdir={run_dir}"]

    def prepare_argv(self, grid_path: str, run: str) -> list[str]:
        return [self.python, *self.prepare, self.config_flag(grid_path, run)]


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """What the processes of a multi-process run are told (imgsynth/multihost.py reads it from
    the environment): how long a silent peer may stay silent before the job is ended as failed,
    and how long processes wait for each other at start-up. None: the trainer's default."""
    peer_s: int | None = None
    init_s: int | None = None

    def __post_init__(self):
        for name, value in (("peer_timeout_s", self.peer_s), ("init_timeout_s", self.init_s)):
            if value is not None and value < 1:
                raise ValueError(f"--{name}={value}: at least 1 second")

    def env(self) -> dict[str, str]:
        return {name: str(value) for name, value in ((PEER_TIMEOUT_ENV, self.peer_s),
                                                     (INIT_TIMEOUT_ENV, self.init_s))
                if value is not None}


PEER_TIMEOUT_ENV, INIT_TIMEOUT_ENV = "IMGSYNTH_PEER_TIMEOUT_S", "IMGSYNTH_INIT_TIMEOUT_S"


def shell(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def run_dir(workdir: str, run: str) -> str:
    return os.path.join(workdir, "runs", run)


# Run files --------------------------------------------------------------------------------------

def grid_of(directory: str) -> str | None:
    """The grid name recorded in an existing run's config.json (None: no run there yet)."""
    try:
        config = io.read_json(os.path.join(directory, "config.json"))
    except (OSError, ValueError):
        return None
    return (config or {}).get("grid", {}).get("name") if config else None


def gone_processes(directory: str) -> list[int]:
    """The processes of a multi-process run whose own record (`processes/<i>.json`, written by
    imgsynth/multihost.py) says running while the process is gone: the job's processes disagree."""
    folder = os.path.join(directory, PROCESSES_DIR)
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    records = [io.read_json(os.path.join(folder, n)) or {} for n in names if n.endswith(".json")]
    return sorted(r["process"] for r in records if "process" in r and io.process_gone(r))


def last_metrics(directory: str, max_bytes: int = 65536) -> dict:
    """The last step and training loss in metrics.jsonl, reading only the end of the file."""
    path = os.path.join(directory, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - max_bytes))
        lines = f.read().decode(errors="replace").splitlines()
    out: dict = {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        out.setdefault("step", row.get("step"))
        if row.get("train/loss") is not None:
            out["loss"] = row["train/loss"]
            break
    return out


def log_tail(path: str, offset: int = 0, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines written to `path` after byte `offset` (one attempt's output)."""
    if not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()[-65536:].decode(errors="replace")
    return "\n".join(data.rstrip().splitlines()[-lines:])


def failure_reason(tail: str, returncode: int) -> str:
    """One line for the status table: the last line that looks like an error, and the exit code."""
    candidates = [l.strip() for l in tail.splitlines() if l.strip()]
    errors = [l for l in candidates if "error" in l.lower() or "exception" in l.lower()]
    line = (errors or candidates or ["(no output)"])[-1]
    return f"exit code {returncode}: {line[:300]}"


# The grid's status file -------------------------------------------------------------------------

def keep_tuned_lr(workdir: str, grid: grid_lib.Grid) -> None:
    """WORKDIR/tuned_lr.json: a copy of the learning rates the grid read (its TUNED_LR_FILE), so
    the report names them and the sweep they came from even after the file is re-tuned."""
    if grid.tuned_lr and os.path.exists(grid.tuned_lr):
        with open(grid.tuned_lr, encoding="utf-8") as f:
            io.atomic_write(os.path.join(workdir, io.TUNED_LR_FILE), f.read())


class LaunchState:
    """WORKDIR/launch_status.json: per run and stage, the launcher's last outcome; per launch its
    start and end (epoch seconds), so a grid's wall time sums its launches, not the gaps between
    them (benchmarks/study_efficiency.py). Atomic writes."""

    def __init__(self, workdir: str, grid: grid_lib.Grid | None = None):
        self.path = os.path.join(workdir, STATE_FILE)
        self.data = io.read_json(self.path) or {}
        self.data.setdefault("runs", {})
        self.data.setdefault("stages", {})
        if grid is not None:
            self.data["grid"] = grid.name
            self.data["grid_path"] = grid.path

    def run(self, name: str) -> dict:
        return self.data["runs"].get(name, {})

    def update_run(self, name: str, **fields) -> None:
        self.data["runs"].setdefault(name, {}).update(fields, updated=io.now())
        self.save()

    def begin_launch(self) -> None:
        self.data.setdefault("launches", []).append({"start": time.time(), "end": None})
        self.save()

    def end_launch(self) -> None:
        self.data["launches"][-1]["end"] = time.time()
        self.save()

    def update_stage(self, tag: str, **fields) -> None:
        self.data["stages"].setdefault(tag, {}).update(fields, updated=io.now())
        self.save()

    def save(self) -> None:
        self.data["updated"] = io.now()
        io.write_json(self.path, self.data)


# The --status table -----------------------------------------------------------------------------

def status_rows(workdir: str, runs: Sequence[grid_lib.Run | grid_lib.RunRef]) -> list[dict]:
    state = LaunchState(workdir)
    rows = []
    for r in runs:
        d = run_dir(workdir, r.name)
        status = io.read_status(d)
        launch = state.run(r.name)
        metrics = last_metrics(d)
        step = metrics.get("step") if metrics.get("step") is not None else status.get("step")
        evaluation = ("done" if os.path.exists(os.path.join(d, "eval.json"))
                      else launch.get("eval", "–") if status["status"] == "done" else "–")
        reason = status.get("reason") or launch.get("reason") or ""
        if status["status"] == "done" and launch.get("eval") in ("failed", "unavailable"):
            reason = launch.get("eval_reason", "")
        missing = gone_processes(d) if status["status"] == "running" else []
        shown = (f"stale (process {', '.join(map(str, missing))} gone)" if missing
                 else "stale (process gone)" if io.process_gone(status) else status["status"])
        total = r.steps if r.steps is not None else (io.read_json(os.path.join(
            d, "config.json")) or {}).get("total_steps")
        rows.append({"run": r.name, "status": shown, "step": step, "total": total,
                     "loss": metrics.get("loss"), "eval": evaluation, "reason": reason})
    return rows


def status_table(rows: Sequence[dict]) -> str:
    header = f"{'run':<34} {'status':<20} {'step/total':>15} {'loss':>8} {'eval':<11} reason"
    lines = [header, "-" * len(header)]
    for row in rows:
        step = (f"{row['step'] if row['step'] is not None else '–'}/"
                f"{row['total'] if row['total'] is not None else '–'}")
        loss = f"{row['loss']:.4f}" if isinstance(row["loss"], (int, float)) else "–"
        reason = " ".join(str(row["reason"]).split())[:90]
        lines.append(f"{row['run']:<34} {row['status']:<20} {step:>15} {loss:>8} "
                     f"{row['eval']:<11} {reason}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append("-" * len(header))
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
