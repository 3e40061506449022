"""python -m launch.tune --workdir=DIR [--grid=lr_sweep] [--out=experiments/tuned_lr.json]

Reads a finished learning-rate sweep (a grid whose runs differ in `optimizer.lr`, like
experiments/grids/lr_sweep.py) and writes, per (paradigm, size), the rate whose run ended with the
lowest eval loss (EMA weights; the mean over seed replicates), with where it was measured and
every rate's loss. The study grids read that file (`common.tuned_lr` in
experiments/grids/cpu_study.py), so every study after it uses the tuned rates. A (paradigm, size)
with an unfinished run is left out and named, never guessed; one whose best rate is the lowest or
highest it swept is named too (`edge`): its optimum may lie outside the sweep.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from imgsynth import io
from launch import grid as grid_lib, runs as runs_lib

DEFAULT_OUT = os.path.join(grid_lib.REPO_ROOT, "experiments", "tuned_lr.json")
LOSS = "eval/loss_ema"


def final_loss(run_dir: str) -> float | None:
    """The last evaluation's EMA eval loss of a finished run (None: not done or no evaluation)."""
    if io.read_status(run_dir)["status"] != "done":
        return None
    values = []
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:   # a half-written line cannot hold the last evaluation of a done run
                continue
            if row.get(LOSS) is not None:
                values.append(row[LOSS])
    return values[-1] if values and math.isfinite(values[-1]) else None


def _edge(lr: float, by_lr: dict) -> str | None:
    """'lowest' or 'highest' where `lr` is an end of more than one swept rate, else None."""
    rates = sorted(map(float, by_lr))
    if len(rates) < 2 or rates[0] < lr < rates[-1]:
        return None
    return "lowest" if lr == rates[0] else "highest"


def tune(grid: grid_lib.Grid, workdir: str) -> tuple[dict, list[str]]:
    """({'source', 'loss', 'lr'}, missing): the best rate per paradigm and size."""
    replicates: dict[str, dict[str, dict[str, list[float]]]] = {}
    missing = []
    for run in grid.runs:
        loss = final_loss(runs_lib.run_dir(workdir, run.name))
        if loss is None:
            missing.append(run.name)
            continue
        lr = repr(float(run.config.optimizer.lr))
        replicates.setdefault(run.paradigm, {}).setdefault(run.size, {}).setdefault(
            lr, []).append(loss)
    # Seed replicates of one rate (`add(..., seeds=...)`) count by their mean.
    losses = {p: {s: {lr: sum(v) / len(v) for lr, v in by_lr.items()} for s, by_lr in sizes.items()}
              for p, sizes in replicates.items()}
    incomplete = {(r.paradigm, r.size) for r in grid.runs if r.name in missing}
    best = {p: {s: float(min(by_lr, key=by_lr.get)) for s, by_lr in sizes.items()
                if (p, s) not in incomplete} for p, sizes in losses.items()}
    edge = {p: {s: side for s, lr in sizes.items() if (side := _edge(lr, losses[p][s]))}
            for p, sizes in best.items()}
    grid_path = (os.path.relpath(grid.path, grid_lib.REPO_ROOT)
                 if grid.path.startswith(grid_lib.REPO_ROOT + os.sep) else grid.path)
    source = {"workdir": os.path.abspath(workdir), "grid": grid_path, "metric": LOSS,
              "budget": sorted({r.budget for r in grid.runs}), "written": io.now()}
    return {"source": source, "loss": losses, "lr": {p: s for p, s in best.items() if s},
            "edge": {p: s for p, s in edge.items() if s}}, missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.tune", description=__doc__.split("\n\n")[1])
    p.add_argument("--workdir", required=True, help="the sweep's study directory")
    p.add_argument("--grid", default="lr_sweep", help="the sweep's grid (name or path)")
    p.add_argument("--out", default=DEFAULT_OUT, help="where the tuned rates go")
    args = p.parse_args(argv)
    try:
        grid = grid_lib.load(args.grid)
    except grid_lib.GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result, missing = tune(grid, args.workdir)
    if not result["lr"]:
        print(f"error: no (paradigm, size) of grid {grid.name!r} has every run done in "
              f"{args.workdir}; not finished: {', '.join(missing)}", file=sys.stderr)
        return 2
    io.write_json(args.out, result)
    for paradigm, sizes in sorted(result["lr"].items()):
        for size, lr in sizes.items():
            print(f"{paradigm:<8} {size:<4} lr {lr:g}  (" + ", ".join(
                f"{float(k):g}: {v:.4f}" for k, v in sorted(result["loss"][paradigm][size].items(),
                                                           key=lambda kv: float(kv[0]))) + ")")
    for paradigm, sizes in sorted(result["edge"].items()):
        for size, side in sizes.items():
            print(f"note: {paradigm} {size}: the best rate is the {side} swept; its optimum may "
                  "lie beyond it (widen the sweep's rates)")
    if missing:
        print(f"left out (runs not finished): {', '.join(missing)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
