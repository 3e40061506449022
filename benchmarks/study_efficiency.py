"""Efficiency of a finished grid, read from the records its processes leave behind.

    python benchmarks/study_efficiency.py --workdir=DIR [--peak_flops_per_core=F]

Sources: each run's status.json `timing` (written by imgsynth/loop.py when training ends: process
start, first step, end, cores, measured peak, FLOPs computed), its eval.json `timing`
(imgsynth/evaluate.py) and WORKDIR/launch_status.json (launch/local.py: each launch's start and
end, each shared stage's seconds and cores). Definitions:

- core-seconds of a process: (end - start) x cores, `start` being the process's own start, so
  imports, restoring and compilation count; cores are those it was pinned to (its share under
  --parallel) or, on accelerators, its devices.
- train_efficiency: training FLOPs computed (each run's update steps in its training process x
  FLOPs per step: a cooldown branch counts its steps after the fork) / (training core-seconds x
  the per-core peak). The per-core peak is the median over runs of the peak each training
  process recorded (imgsynth/perf.py: an n x n matmul in the training dtype, what MFU divides
  by; the launcher's stages measure it before any run) over its cores, or
  --peak_flops_per_core. Unlike MFU, which times the update steps alone, it charges start-up,
  compilation, in-training evaluations and checkpoints.
- eval_share: evaluation core-seconds / the grid's core-seconds (training + evaluation +
  shared stages).
- wall_s: the launches' end - start summed (gaps between launches are not the grid's); without
  launch records, the first process start to the last process end.
- start_to_first_step_s: median over training processes of first step - process start.
- runs: run directories; `trained` and `evaluated` count those with a timing record.
A run resumed after a kill records its last process only (`resumed` counts them). The last line
is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from imgsynth import io  # noqa: E402
from imgsynth.scaling import table  # noqa: E402


def _core_s(timing: dict) -> float:
    return (timing["end"] - timing["start"]) * timing["cores"]


def measure(workdir: str, peak_per_core: float | None = None) -> dict:
    """The efficiency figures of the grid in `workdir` (see the module docstring)."""
    run_dirs = table.find_run_dirs(workdir)
    if not run_dirs:
        raise ValueError(f"no run directories under {workdir!r}")
    train, evals, resumed, untimed = [], [], 0, []
    for d in run_dirs:
        status = io.read_status(d)
        timing = status.get("timing")
        if status["status"] == "done" and not timing:
            untimed.append(os.path.relpath(d, workdir))
        if timing:
            train.append(timing)
            config = io.read_json(os.path.join(d, "config.json")) or {}
            total = config.get("total_steps")
            fork = (config.get("fork_from") or {}).get("step") or 0
            resumed += bool(total and timing["steps"] < total - fork)
        evaluation = io.read_json(os.path.join(d, "eval.json")) or {}
        if evaluation.get("timing"):
            evals.append(evaluation["timing"])
    if not train:
        raise ValueError(f"no run under {workdir!r} records its training time (status.json "
                         "'timing', written when training ends); "
                         + (f"done without it: {', '.join(untimed[:5])}" if untimed else
                            "no run is done"))
    launch = io.read_json(os.path.join(workdir, "launch_status.json")) or {}
    stages = [s for s in launch.get("stages", {}).values() if "seconds" in s]
    peaks = [t["peak_flops_per_s"] / t["cores"] for t in train if t.get("peak_flops_per_s")]
    if peak_per_core is None:
        if not peaks:
            raise ValueError("no training record holds a measured peak; pass "
                             "--peak_flops_per_core")
        peak_per_core = statistics.median(peaks)
    train_core_s = sum(_core_s(t) for t in train)
    eval_core_s = sum(_core_s(t) for t in evals)
    stage_core_s = sum(s["seconds"] * s["cores"] for s in stages)
    flops = sum(t["flops"] for t in train)
    launches = [x for x in launch.get("launches", []) if x.get("end")]
    if launches:
        wall = sum(x["end"] - x["start"] for x in launches)
    else:
        processes = train + evals
        wall = max(t["end"] for t in processes) - min(t["start"] for t in processes)
    first = [t["first_step"] - t["start"] for t in train if t.get("first_step")]
    grid_core_s = train_core_s + eval_core_s + stage_core_s
    return {
        "train_efficiency": flops / (train_core_s * peak_per_core),
        "eval_share": eval_core_s / grid_core_s,
        "wall_s": wall,
        "runs": len(run_dirs),
        "start_to_first_step_s": statistics.median(first) if first else None,
        "trained": len(train), "evaluated": len(evals), "resumed": resumed,
        "untimed": len(untimed), "train_flops": flops, "peak_flops_per_core": peak_per_core,
        "train_core_s": train_core_s, "eval_core_s": eval_core_s, "stage_core_s": stage_core_s,
        "start_to_first_step_max_s": max(first) if first else None,
        "launches": len(launches)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a grid's study directory")
    parser.add_argument("--peak_flops_per_core", type=float, default=None,
                        help="per-core peak FLOP/s (default: the median the runs measured)")
    args = parser.parse_args(argv)
    if args.peak_flops_per_core is not None and not (
            args.peak_flops_per_core > 0 and math.isfinite(args.peak_flops_per_core)):
        parser.error("--peak_flops_per_core must be a positive number")
    try:
        result = measure(args.workdir, args.peak_flops_per_core)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{result['trained']} runs trained, {result['evaluated']} evaluated: "
          f"train {result['train_core_s'] / 60:.1f}, eval {result['eval_core_s'] / 60:.1f}, "
          f"stages {result['stage_core_s'] / 60:.1f} core-min; "
          f"wall {result['wall_s'] / 60:.1f} min")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
