"""`--compile_only`: the memory every run of a grid needs per device, before paying for a pod.

Each run's update step is lowered and compiled by `python -m imgsynth.train --compile_only`, whose
last output line is a JSON report. `fake_devices` compiles for that many host CPU devices, so a
pod's mesh can be checked on a laptop (CPU layouts differ from TPU/GPU ones: a guide, not a
guarantee).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence

from launch import grid as grid_lib, runs as runs_lib


def parse_report(output: str) -> dict | None:
    """The last JSON object line of a --compile_only output (None if there is none)."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def compile_runs(grid: grid_lib.Grid, runs: Sequence[grid_lib.Run], *,
                 commands: runs_lib.Commands = runs_lib.Commands(), fake_devices: int | None = None,
                 out=None) -> list[dict]:
    """Compiles each run in a subprocess; one row per run with its report or its error."""
    out = out or (lambda line: print(line, flush=True))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (grid_lib.REPO_ROOT, env.get("PYTHONPATH")) if p)
    if fake_devices:
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + f" --xla_force_host_platform_device_count={fake_devices}").strip()
    rows = []
    for run in runs:
        out(f"compiling {run.name} ...")
        p = subprocess.run(commands.compile_argv(grid.path, run.name), env=env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        report = parse_report(p.stdout) if p.returncode == 0 else None
        error = None
        if report is None:
            tail = (p.stdout + p.stderr).strip().splitlines()[-5:]
            error = runs_lib.failure_reason("\n".join(tail), p.returncode)
        rows.append({"run": run.name, "report": report, "error": error})
    return rows


def table(rows: Sequence[dict]) -> str:
    header = (f"{'run':<34} {'devices':>7} {'mesh':<22} {'params':>9} {'peak/device':>12} "
              f"{'compile':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        r = row["report"]
        if r is None:
            lines.append(f"{row['run']:<34} error: {row['error']}")
            continue
        peak = r.get("peak_bytes_per_device")
        mesh = ",".join(f"{k}={v}" for k, v in (r.get("mesh") or {}).items())
        lines.append(f"{row['run']:<34} {r.get('devices', '–'):>7} {mesh:<22} "
                     f"{r.get('params_total', 0) / 1e6:>8.1f}M "
                     f"{(f'{peak / 2**30:.3f} GiB' if peak is not None else '–'):>12} "
                     f"{r.get('compile_s', 0):>7.1f}s")
    return "\n".join(lines)
