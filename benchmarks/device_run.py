"""The steps of `benchmarks/device_run.sh`, each ending with one JSON line (`"step": ...`).

    python benchmarks/device_run.py plan [--grid=G] [--rehearse --workdir=DIR]
    python benchmarks/device_run.py run --workdir=DIR --out=DIR --deadline=T [--grid=G] [--rehearse]

`run` does every step in this one process (each process start costs seconds of the call), a
failed step reporting an error line while the later ones still run where they can:

plan     the grid's itemised estimate of the whole call (benchmarks/device_plan.py); refuses
         (exit 2) an `eta_s` over `--budget_s` unless rehearsing
env      device and versions; `peak` the measured bf16 matmul peak
data     the shapes data built with every core; `shipped` the shipped autoencoders, judge and
         alignment model copied into the cache
grid     the grid through `python -m launch --parallel=N` (the runs share the one GPU, each with
         its fraction of the memory): the launcher's stages encode the data on the GPU (the
         `encode` line), then the trunks, branches and each branch's evaluation; at the deadline
         less what an evaluation and the report need, the launcher is stopped (the runs
         checkpoint)
evaluate the trained branches still without an evaluation, until the deadline less the report's
report   the report (results.csv, findings.md, report.html), a montage of each paradigm's largest
         evaluated budget, and those files copied to `--out`

This process keeps its JAX client small (no preallocation) while the launcher's processes hold
the device. `--rehearse` is the same on a CPU at tiny sizes (gpu_study.REHEARSAL).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_GRID = os.path.join(REPO_ROOT, "experiments", "grids", "gpu_study.py")
BUDGET_S = 360.0
PARALLEL = {"gpu": 8, "cpu": 2}   # processes sharing the device: 16 cores, 2 each
STOP_GRACE_S = 25.0               # a stopped run's checkpoint
REHEARSAL_GRID = '''"""gpu_study at the rehearsal's sizes, written by benchmarks/device_run.py."""
from experiments.grids import gpu_study


def sweep(add):
    gpu_study.sweep(add, rehearse=True)
'''


_JSON = None   # where the JSON lines go once `quiet_stdout` moved everything else to stderr


def emit(step: str, result: dict) -> None:
    print(json.dumps({"step": step, **result}, default=str), file=_JSON or sys.stdout,
          flush=True)


def quiet_stdout() -> None:
    """Leaves stdout to the JSON lines: whatever else writes to it (TFDS's progress, the data
    build's worker processes, the launcher) goes to stderr, the log."""
    global _JSON
    _JSON = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)


def grid_path(args) -> str:
    """The grid to run: `--grid`, or gpu_study (its rehearsal sizes written into the workdir)."""
    if args.grid:
        return os.path.abspath(args.grid)
    if not args.rehearse:
        return STUDY_GRID
    path = os.path.join(args.workdir, "gpu_study_rehearsal.py")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.write(REHEARSAL_GRID)
        os.replace(path + ".tmp", path)
    return path


def load_grid(args):
    """The grid, every run's cache in WORKDIR/cache (`--set cache_dir=...` for the children)."""
    from launch import grid as grid_lib
    if args.workdir:   # the plan needs none
        os.environ[grid_lib.OVERRIDES_ENV] = json.dumps(
            {**grid_lib.command_line_overrides(), "cache_dir": os.path.join(args.workdir, "cache")})
    return grid_lib.load(grid_path(args))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parallel(args) -> int:
    return args.parallel or PARALLEL["cpu" if args.rehearse else "gpu"]


# ---- plan ---------------------------------------------------------------------------------------

def step_plan(args) -> int:
    import device_plan
    from imgsynth.data import shapes
    grid = load_grid(args)
    name = grid.runs[0].config.data.builder_config
    sizes = next(c for c in shapes.CaptionedShapes.BUILDER_CONFIGS if c.name == name)
    plan = device_plan.estimate(grid.runs, parallel(args),
                                images=sum(sizes.split_sizes().values()),
                                cores=cores() if args.rehearse else 16)
    plan.update(grid=os.path.relpath(grid.path, REPO_ROOT), budget_s=args.budget_s,
                rehearse=args.rehearse)
    emit("plan", plan)
    if plan["eta_s"] > args.budget_s and not args.rehearse:
        print(f"error: grid {grid.name}: estimated {plan['eta_s']:.0f} s, over the "
              f"{args.budget_s:.0f} s budget; shrink its budgets or runs", file=sys.stderr)
        return 2
    return 0


# ---- prepare ------------------------------------------------------------------------------------

def step_prepare(args) -> int:
    if not args.rehearse:   # the launcher's processes take the device's memory, not this one
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import device_check
    import flax
    import jax
    import jax.numpy as jnp
    from imgsynth import perf, stages
    from imgsynth.data import build
    grid = load_grid(args)
    device = jax.devices()[0]
    emit("env", {"backend": jax.default_backend(), "device_kind": device.device_kind,
                 "devices": jax.device_count(), "jax": jax.__version__,
                 "flax": flax.__version__, "python": sys.version.split()[0], "cores": cores(),
                 "cudnn": device_check.cudnn_version(),
                 "nvidia_smi": device_check.nvidia_smi()})
    config = grid.runs[0].config
    t0 = time.perf_counter()
    peak = perf.measure_device_peak(jnp.bfloat16, n=256 if args.rehearse else None)
    emit("peak", {"dtype": "bfloat16", "peak_flops_per_s": peak,
                  "seconds": time.perf_counter() - t0})
    t0 = time.perf_counter()
    workers = max(1, cores() - 1)   # the main process encodes and writes every record
    path = build.build_if_missing(stages.data_config(config), num_workers=workers)
    with open(os.path.join(path, build.SUMMARY_FILE)) as f:
        summary = json.load(f)
    emit("data", {"dataset": grid.runs[0].dataset, "path": path, "workers": workers,
                  "build": summary, "seconds": time.perf_counter() - t0})
    t0 = time.perf_counter()
    keys = {r.stage_key(): r.config for r in grid.runs}
    made = {"autoencoders": sorted({os.path.basename(stages.autoencoder(c))
                                    for c in keys.values()}),
            "judge": stages.judge(config), "alignment": stages.alignment(config)}
    emit("shipped", {**made, "seconds": time.perf_counter() - t0})
    return 0


# ---- grid ---------------------------------------------------------------------------------------

def launcher(args, grid, runs=None) -> subprocess.Popen:
    """`python -m launch` on the grid (or on `runs` of it); it dies with this step (SIGTERM:
    its runs checkpoint), so a step killed at the call's hard limit leaves nothing running."""
    from launch import local
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    if not args.rehearse:   # each process its share of the GPU's memory
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / parallel(args):.3f}"
    argv = [sys.executable, "-m", "launch", f"--grid={grid.path}", f"--workdir={args.workdir}",
            f"--parallel={parallel(args)}"]
    if runs is not None:
        argv.append("--runs=^(" + "|".join(re.escape(n) for n in runs) + ")$")
    env.update(local.die_with_parent_env())
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env,
                            preexec_fn=functools.partial(local.die_with_parent, os.getpid()))


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM: the launcher forwards it, the runs checkpoint and stop; a second one kills."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()


def run_until(proc: subprocess.Popen, stop_at: float, poll=None) -> tuple[int, bool]:
    """(exit status, stopped at `stop_at`); `poll()` is called every half second meanwhile."""
    while proc.poll() is None:
        if poll:
            poll()
        if time.time() >= stop_at:
            return stop(proc), True
        time.sleep(0.5)
    return proc.returncode, False


def step_grid(args) -> int:
    import device_plan
    from launch import runs as runs_lib
    grid = load_grid(args)
    stop_at = args.deadline - (device_plan.REPORT_S + device_plan.EVAL_RESERVE_S)
    t0 = time.time()
    encoded = {}

    def watch_stages():   # the launcher's stages encode the data: their line once done
        if encoded:
            return
        stages = runs_lib.LaunchState(args.workdir).data.get("stages", {})
        if stages and all(s.get("status") in ("done", "failed") for s in stages.values()):
            encoded.update(stages)
            emit("encode", {"stages": {k: {"status": s["status"], "seconds": s.get("seconds"),
                                           "reason": s.get("reason")}
                                       for k, s in stages.items()},
                            "seconds": time.time() - t0})

    rc, stopped = run_until(launcher(args, grid), stop_at, watch_stages)
    watch_stages()
    emit("grid", {**summary(args.workdir, grid), "launcher_rc": rc, "stopped_at_deadline":
                  stopped, "seconds": time.time() - t0})
    return 0


def summary(workdir: str, grid) -> dict:
    from launch import runs as runs_lib
    rows = {r["run"]: r for r in runs_lib.status_rows(workdir, grid.runs)}
    done = [r for r in grid.runs if rows[r.name]["status"] == "done"]
    return {"runs": len(grid.runs), "trained": len(done),
            "evaluated": sum(rows[r.name]["eval"] == "done" for r in grid.runs),
            "train_flops": sum(r.own_flops for r in done),
            "top_budget_trained": max((r.budget for r in done if r.role == "branch"),
                                      default=0.0),
            "not_trained": [n for n, r in rows.items() if r["status"] != "done"]}


def step_evaluate(args) -> int:
    import device_plan
    grid = load_grid(args)
    from launch import runs as runs_lib
    rows = {r["run"]: r for r in runs_lib.status_rows(args.workdir, grid.runs)}
    todo = [r.name for r in grid.runs if r.evaluate and rows[r.name]["status"] == "done"
            and rows[r.name]["eval"] != "done"]
    t0, rc, stopped = time.time(), 0, False
    if todo:
        rc, stopped = run_until(launcher(args, grid, todo),
                                args.deadline - device_plan.REPORT_S)
    emit("evaluate", {**summary(args.workdir, grid), "leftover": todo, "launcher_rc": rc,
                      "stopped_at_deadline": stopped, "seconds": time.time() - t0})
    return 0


# ---- report -------------------------------------------------------------------------------------

OUT_FILES = ("results.csv", "findings.md", "report.html")


def step_report(args) -> int:
    from imgsynth import io
    from imgsynth.scaling import report
    grid = load_grid(args)
    t0 = time.time()
    path = report.build_report(args.workdir, n_bootstrap=200)
    os.makedirs(args.out, exist_ok=True)
    written = []
    for name in OUT_FILES:
        src = os.path.join(os.path.dirname(path), name)
        if os.path.exists(src):
            with open(src, "rb") as f:
                io.atomic_write(os.path.join(args.out, name), f.read())
            written.append(name)
    montage = make_montage(args.workdir, grid, os.path.join(args.out, "samples.png"))
    emit("report", {"files": written + ([os.path.basename(montage)] if montage else []),
                    "seconds": time.time() - t0})
    return 0


def make_montage(workdir: str, grid, out_path: str) -> str | None:
    """The EMA sample grids of each paradigm's largest evaluated budget, side by side, each under
    its run's name."""
    from io import BytesIO

    from PIL import Image, ImageDraw
    from imgsynth import io
    from launch import runs as runs_lib
    best = {}
    for r in grid.runs:
        png = os.path.join(runs_lib.run_dir(workdir, r.name), "samples_ema.png")
        if r.evaluate and os.path.exists(png) and r.budget >= best.get(r.paradigm, (0, ""))[0]:
            best[r.paradigm] = (r.budget, png, r.name)
    if not best:
        return None
    panels = [(name, Image.open(png).convert("RGB")) for _, png, name in best.values()]
    label = 20
    canvas = Image.new("RGB", (sum(i.width for _, i in panels),
                               label + max(i.height for _, i in panels)), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for name, image in panels:
        draw.text((x + 4, 4), name, fill="black")
        canvas.paste(image, (x, label))
        x += image.width
    buffer = BytesIO()
    canvas.save(buffer, format="PNG")
    io.atomic_write(out_path, buffer.getvalue())
    return out_path


def step_run(args) -> int:
    """Every step in turn; an exception is its step's error line. Exit 1 if one failed."""
    failed = False
    rc = step_plan(args)
    if rc:
        return rc
    for step in (step_prepare, step_grid, step_evaluate, step_report):
        try:
            step(args)
        except Exception as e:   # noqa: BLE001  (reported; the later steps still run)
            failed = True
            import traceback
            traceback.print_exc()
            emit(step.__name__.removeprefix("step_"), {"error": f"{type(e).__name__}: {e}"[:500]})
            if step is step_prepare:   # no data: nothing to train or report
                break
    return int(failed)


STEPS = {"plan": step_plan, "run": step_run}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=STEPS)
    p.add_argument("--workdir", default="", help="runs, caches, log (every step but plan)")
    p.add_argument("--out", default="")
    p.add_argument("--grid", default="", help="a grid file (default: gpu_study)")
    p.add_argument("--rehearse", action="store_true", help="tiny sizes, on a CPU")
    p.add_argument("--parallel", type=int, default=0, help="runs sharing the device")
    p.add_argument("--budget_s", type=float, default=BUDGET_S)
    p.add_argument("--deadline", type=float, default=0.0, help="epoch seconds the call ends")
    args = p.parse_args(argv)
    if not args.workdir and (args.step == "run" or args.rehearse):
        p.error(f"{args.step} needs --workdir")
    if args.step == "run" and not (args.out and args.deadline):
        p.error("run needs --out and --deadline")
    if args.workdir:
        args.workdir = os.path.abspath(args.workdir)
        os.makedirs(args.workdir, exist_ok=True)
    if args.rehearse:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, REPO_ROOT)
    if args.step == "run":
        quiet_stdout()
    return STEPS[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
