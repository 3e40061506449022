"""The one-command study: run a grid locally, then build the report.

    imgsynth-study [--grid=quickstart] [--workdir=./study] [--parallel=N] [--set KEY=VALUE ...]

Runs every stage, training run and evaluation of the grid through the launcher's local backend
(resumable: run the same command again after an interruption), then writes
WORKDIR/report/report.html. Grid names are files in experiments/grids/ of the repository checkout,
so the study runs from a checkout (`pip install -e .`); `--grid` also takes a path.
"""
from __future__ import annotations

import argparse
import os
import sys

from imgsynth import cli
from launch import grid as grid_lib, local


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(prog="imgsynth-study", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="quickstart", help="grid name or path (default: quickstart)")
    p.add_argument("--workdir", default="./study", help="study directory (default: ./study)")
    p.add_argument("--parallel", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs at a time, the cores divided among them (default: 2, or 1 on a "
                        "one-core machine)")
    p.add_argument("--retry_failed", action="store_true", help="rerun runs that failed before")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their ETA only")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the fits")
    grid_lib.add_set_argument(p)
    args = cli.one_line(p).parse_args(argv)
    cli.check_workdir(args.workdir, args.parallel)

    try:
        grid = grid_lib.load(args.grid)
    except grid_lib.GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study: grid {grid.name} ({len(grid.runs)} runs) in {os.path.abspath(args.workdir)}",
          flush=True)
    print(grid_lib.plan_table(grid.runs), flush=True)
    from launch import stage_estimate
    for line in stage_estimate.stage_lines(grid.runs):
        print(line, flush=True)
    if args.dry_run:
        return 0
    launcher = local.LocalLauncher(grid, args.workdir, parallel=args.parallel,
                                   retry_failed=args.retry_failed)
    try:
        code = launcher.run()
    except local.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if code == local.EXIT_INTERRUPTED:
        print("interrupted: run the same command again to resume", flush=True)
        return code
    if code:
        print("some runs failed (see the table above); the report covers the others", flush=True)
    from imgsynth.scaling import report
    path = report.build_report(args.workdir, n_bootstrap=args.bootstrap)
    print(f"report: {os.path.abspath(path)}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
