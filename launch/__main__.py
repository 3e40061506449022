"""python -m launch --grid=GRID --workdir=DIR [--backend=local|tpu|slurm] [options]

    --dry_run        print the runs (steps, FLOPs, ETA) and the commands, run nothing
    --status         print the table of runs (status, step/total, last loss, reason)
    --compile_only   compile every run's update step and print its peak memory per device
    --retry_failed   also rerun runs (and evaluations) that failed before
    --skip_eval      local: train only (a later launch without it evaluates the done runs)
    --runs=REGEX     only the runs whose name matches
    --set KEY=VALUE  override a config key in every run (repeatable), e.g. point the grid at a
                     dataset: --set data.name=folder --set data.folder_name=NAME --set data.data_dir=DIR

See docs/launch.md for the TPU-pod and SLURM options.
"""
from __future__ import annotations

import argparse
import sys

from imgsynth import cli
from launch import grid as grid_lib, runs as runs_lib


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("--grid", required=True, help="grid name (experiments/grids/NAME.py) or path")
    p.add_argument("--workdir", help="study directory; runs go to WORKDIR/runs/<run>/ (TPU: a "
                   "path every worker sees)")
    p.add_argument("--backend", choices=("local", "tpu", "slurm"), default="local")
    p.add_argument("--parallel", type=int, default=1, help="local: runs at a time")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--status", action="store_true")
    p.add_argument("--retry_failed", action="store_true")
    p.add_argument("--compile_only", action="store_true")
    p.add_argument("--skip_eval", action="store_true", help="local: train only")
    p.add_argument("--runs", help="regular expression selecting runs by name")
    grid_lib.add_set_argument(p)
    p.add_argument("--flops_per_s", type=float, help="achieved training FLOP/s for ETAs "
                   "(default: measured CPU rates for the CPU sizes)")
    p.add_argument("--fake_devices", type=int, help="--compile_only: compile for this many "
                   "host CPU devices (a pod's mesh on a laptop)")
    tpu = p.add_argument_group("tpu")
    tpu.add_argument("--tpu_name")
    tpu.add_argument("--zone")
    tpu.add_argument("--project")
    tpu.add_argument("--repo_dir", default="~/imgsynth", help="the checkout on the workers")
    tpu.add_argument("--queued_resource", help="create (if needed) and await this queued resource")
    tpu.add_argument("--accelerator_type")
    tpu.add_argument("--runtime_version")
    tpu.add_argument("--spot", action="store_true")
    tpu.add_argument("--setup_command", help="replaces the default pip install on the workers")
    tpu.add_argument("--skip_setup", action="store_true")
    tpu.add_argument("--local_dir", help="TPU: where this machine keeps logs and the grid status "
                     "(default ./tpu-<tpu_name>)")
    pod = p.add_argument_group("multi-process runs (local --processes, tpu, slurm)")
    pod.add_argument("--processes", type=int, default=1, help="local: train each run as this "
                     "many processes of one JAX job (IMGSYNTH_NUM_PROCESSES; set XLA_FLAGS for "
                     "their devices)")
    pod.add_argument("--peer_timeout_s", type=int, help="end a run as failed once one of its "
                     "processes has been silent this long (default 20)")
    pod.add_argument("--init_timeout_s", type=int, help="how long a run's processes wait for "
                     "each other at start-up (default 300)")
    slurm = p.add_argument_group("slurm")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus_per_node", type=int, default=0)
    slurm.add_argument("--partition")
    slurm.add_argument("--time", default="24:00:00", help="job time limit (SLURM format)")
    slurm.add_argument("--cpus_per_task", type=int)
    slurm.add_argument("--slurm_cluster", help="submitit cluster: default auto; 'local' runs the "
                       "jobs on this machine")
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs and report")
    return p


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _main(argv) -> int:
    args = cli.one_line(parser()).parse_args(argv)
    cli.check_workdir(args.workdir, args.parallel)
    if args.processes < 1:
        raise cli.UsageError(f"--processes={args.processes}: at least one process per run")
    try:
        args.timeouts = runs_lib.Timeouts(args.peer_timeout_s, args.init_timeout_s)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    if args.status and args.backend != "tpu" and args.workdir:
        try:   # run names only: no config is built, so no JAX is imported
            runs = grid_lib.load_names(args.grid).select(args.runs)
        except grid_lib.GridError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(runs_lib.status_table(runs_lib.status_rows(args.workdir, runs)))
        return 0
    try:
        grid = grid_lib.load(args.grid)
        runs = grid.select(args.runs)
    except grid_lib.GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(f"grid {grid.name} ({grid.path}): {len(runs)} runs")
        print(grid_lib.plan_table(runs, args.flops_per_s))
        from launch import stage_estimate
        for line in stage_estimate.stage_lines(runs):
            print(line)
    if args.compile_only:
        from launch import memory
        if args.backend != "local":
            print("error: --compile_only compiles here; for a pod's mesh add --fake_devices=N, or "
                  "run it on a worker", file=sys.stderr)
            return 2
        if args.dry_run:
            for r in runs:
                print(runs_lib.shell(runs_lib.Commands().compile_argv(grid.path, r.name)))
            return 0
        rows = memory.compile_runs(grid, runs, fake_devices=args.fake_devices)
        print(memory.table(rows))
        return 1 if any(r["report"] is None for r in rows) else 0
    if args.backend == "tpu":
        return _tpu(args, grid, runs)
    if not args.workdir:
        if args.dry_run:
            return 0
        print("error: --workdir is required", file=sys.stderr)
        return 2
    if args.backend == "slurm":
        return _slurm(args, grid, runs)
    if args.dry_run:
        print("\nlocal commands of the first run:")
        r = runs[0]
        d = runs_lib.run_dir(args.workdir, r.name)
        print(runs_lib.shell(runs_lib.Commands().train_argv(grid.path, r.name, d)))
        print(runs_lib.shell(runs_lib.Commands().evaluate_argv(d)))
        return 0
    from launch import local
    launcher = local.LocalLauncher(grid, args.workdir, parallel=args.parallel, runs=runs,
                                   retry_failed=args.retry_failed, flops_per_s=args.flops_per_s,
                                   evaluate=not args.skip_eval, processes=args.processes,
                                   timeouts=args.timeouts)
    try:
        return launcher.run()
    except local.LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _tpu(args, grid, runs) -> int:
    from launch import tpu
    missing = [f"--{k}" for k in ("tpu_name", "zone", "workdir") if not getattr(args, k)]
    if missing:
        print(f"error: the TPU backend needs {', '.join(missing)}", file=sys.stderr)
        return 2
    target = tpu.TpuTarget(name=args.tpu_name, zone=args.zone, project=args.project,
                           repo_dir=args.repo_dir, queued_resource=args.queued_resource,
                           accelerator_type=args.accelerator_type,
                           runtime_version=args.runtime_version, spot=args.spot,
                           setup=args.setup_command)
    launcher = tpu.TpuLauncher(grid, target, args.workdir, runs=runs,
                               local_dir=args.local_dir or f"tpu-{args.tpu_name}",
                               retry_failed=args.retry_failed, skip_setup=args.skip_setup,
                               timeouts=args.timeouts)
    if args.dry_run:
        print("\n" + launcher.dry_run())
        return 0
    if args.status:
        state = runs_lib.LaunchState(launcher.local_dir)
        for r in runs:
            rec = state.run(r.name)
            print(f"{r.name:<34} train {rec.get('train', '–'):<8} eval {rec.get('eval', '–'):<8} "
                  f"{rec.get('reason') or ''}")
        return 0
    return launcher.run()


def _slurm(args, grid, runs) -> int:
    from launch import slurm
    options = slurm.SlurmOptions(nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                 partition=args.partition, time=args.time,
                                 cpus_per_task=args.cpus_per_task, cluster=args.slurm_cluster)
    if args.dry_run:
        print(f"\nsubmitit: one job per run, {options.nodes} node(s) x 1 task, "
              f"{options.gpus_per_node} GPU(s) per node, partition {options.partition or '-'}, "
              f"time {options.time} ({slurm.time_minutes(options.time)} min); every task runs:")
        r = runs[0]
        print(runs_lib.shell(runs_lib.Commands().train_argv(
            grid.path, r.name, runs_lib.run_dir(args.workdir, r.name))))
        return 0
    jobs = slurm.submit(grid, args.workdir, options, runs=runs, retry_failed=args.retry_failed,
                        timeouts=args.timeouts)
    if args.wait and jobs:
        return slurm.wait(grid, args.workdir, jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
