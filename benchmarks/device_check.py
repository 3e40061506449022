"""The parts of `device_check.sh`, each ending with one JSON line (`"part": ...`).

    python benchmarks/device_check.py PART [PART...] [--smoke] [--workdir=DIR]

env     the device, jax/jaxlib/CUDA/cuDNN versions, and the measured bfloat16 matmul peak
train   training MFU (against that peak) of a ~300M-parameter model, flow and next-token,
        at 256 image tokens (width 1024, 16 layers, 16 heads; caption encoder 4 layers), batch
        128; then flow at batch 256 and 512 with the rematerialisation `model.remat=auto`
        chooses for the device's memory (`train_remat`)
sample  images/s at a batch of 256 per paradigm at 256 tokens, and the next-token KV-cache
        speedup at a batch of 64 (cached decoding vs recomputing the prefix every token)
grid    the nine training runs of experiments/grids/gpu_study.py through `python -m launch`,
        on synthetic records (no data, autoencoder or evaluation stages)

`--smoke` runs every part at tiny sizes (size T at 64 tokens, sampling at batch 1 with its
latency, one 2-step grid run): on a CPU in a few minutes, so the script is exercised by the test
suite and cannot rot. The parts reuse benchmarks/backbone_throughput.py, benchmarks/sampling.py and
imgsynth/perf.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("env", "train", "sample", "grid")
GRID_PARALLEL = 3           # runs sharing the one device; each gets 1/3 of its memory


def emit(part: str, result: dict) -> None:
    print(json.dumps({"part": part, **result}), flush=True)


def model_config(paradigm: str, smoke: bool, global_batch_size: int):
    """The ~300M-parameter model at 256 image tokens (smoke: the tiny T model at 64 tokens)."""
    from imgsynth import config as config_lib
    if smoke:
        config = config_lib.default_config(paradigm, f"size=T,global_batch_size={global_batch_size}")
    else:
        config = config_lib.default_config(paradigm, f"size=XXL,global_batch_size={global_batch_size}")
        config.model.depth, config.text.depth = 16, 4
        config.data.resolution, config.data.builder_config = 64, "r64"
    config.model.dtype = "bfloat16"
    return config


def measured_peak(smoke: bool) -> float:
    import jax.numpy as jnp
    from imgsynth import perf
    return perf.measure_device_peak(jnp.bfloat16, n=256 if smoke else None)


def part_env(args) -> None:
    import flax
    import jax
    import jaxlib
    import optax
    device = jax.devices()[0]
    result = {"backend": jax.default_backend(), "device_kind": device.device_kind,
              "devices": jax.device_count(), "processes": jax.process_count(),
              "platform_version": str(getattr(device.client, "platform_version", "")),
              "compute_capability": getattr(device, "compute_capability", None),
              "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
              "optax": optax.__version__, "python": platform.python_version(),
              "cudnn": _cudnn_version(), "nvidia_smi": _nvidia_smi()}
    emit("env", result)
    peak = measured_peak(args.smoke)
    emit("peak", {"dtype": "bfloat16", "peak_flops_per_s": peak, "device_kind": device.device_kind})


def _cudnn_version():
    try:   # jaxlib's own record of the cuDNN it loaded; absent without CUDA
        from jax._src.lib import cuda_versions
        return cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception:   # noqa: BLE001  (a missing or changed private module: just not reported)
        return None


def _nvidia_smi():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def part_train(args) -> None:
    import backbone_throughput
    peak = measured_peak(args.smoke)
    for paradigm in ("flow", "ar"):
        config = model_config(paradigm, args.smoke, 8 if args.smoke else 128)
        emit("train_mfu", measure_or_xla(
            "train_mfu", config,
            lambda c: backbone_throughput.measure(c, steps=2 if args.smoke else 10, peak=peak)))
    for batch in (16,) if args.smoke else (256, 512):   # beyond what fits without remat
        config = model_config("flow", args.smoke, batch)
        emit("train_remat", measure_or_xla("train_remat", config, lambda c: remat_and_mfu(
            c, steps=2 if args.smoke else 5, peak=peak)))


def remat_and_mfu(config, steps: int, peak: float) -> dict:
    """`model.remat=auto`'s choice for this device (from the compiled step's memory, before any
    weights exist), then the training MFU under that choice."""
    import backbone_throughput
    from imgsynth import registry, train
    limit = train.device_memory_limit()
    remat, peaks = train.choose_remat(config, registry.plan(config), limit)
    config.model.remat = remat
    return {**backbone_throughput.measure(config, steps=steps, peak=peak), "remat": remat,
            "memory_limit_bytes": limit, "remat_peak_bytes_per_device": peaks}


# Sampling is measured at this batch (guidance doubles it), the KV-cache speedup at the smaller
# one: recomputing the prefix at 256 costs five times flow's 50 steps.
SAMPLE_BATCH, KV_BATCH = 256, 64


def part_sample(args) -> None:
    import sampling
    for paradigm in ("flow", "maskgit", "ar"):
        config = model_config(paradigm, args.smoke, 8)
        if args.smoke and paradigm == "flow":
            config.sampler.steps = 2
        result = measure_or_xla("sampling", config, lambda c: sampling.measure(
            c, batch=1 if args.smoke else SAMPLE_BATCH, repeats=1, latency=args.smoke,
            kv_batch=1 if args.smoke else KV_BATCH))   # smoke: batch 1, one compilation
        emit("sampling", result)
        if "kv_cache_speedup" in result:
            emit("kv_cache", {k: result[k] for k in ("paradigm", "size", "kv_batch",
                                                     "image_tokens", "kv_images_per_s",
                                                     "uncached_images_per_s",
                                                     "kv_cache_speedup", "attention", "device")})


def measure_or_xla(part: str, config, measure) -> dict:
    """`measure(config)` with its attention kernel named; if cuDNN's kernel fails (an unsupported
    shape or cuDNN version), an error line names why and the figure is measured with XLA's."""
    from imgsynth.models import transformer
    from imgsynth.paradigms import base
    kernel = transformer.attention_implementation(base.backbone_config(config, causal=False))
    try:
        return {**measure(config), "attention": kernel}
    except Exception as e:   # noqa: BLE001  (reported, then measured without the fused kernel)
        if kernel != "cudnn":
            raise
        emit(part, {"paradigm": config.paradigm, "attention": kernel,
                    "error": f"{type(e).__name__}: {e}"[:1000]})
        config.model.attention = "xla"
        return {**measure(config), "attention": "xla"}


def grid_runs(smoke: bool) -> list[dict]:
    """gpu_study's runs on synthetic records (smoke: one 2-step MaskGIT run of size T)."""
    sys.path.insert(0, REPO_ROOT)
    from launch import grid as grid_lib
    from imgsynth import config as config_lib, registry
    synthetic = {"data.name": "synthetic", "data.synthetic_examples": 2048}
    if smoke:
        config = config_lib.default_config("maskgit", "size=T,runlocal")
        step = registry.paradigm_module(config).model_cost(config).train_flops_per_example
        return [dict(paradigm="maskgit", size="T", budget=2.5 * step * config.global_batch_size,
                     runlocal=True, overrides={**synthetic, "data.synthetic_examples": 256,
                                               "log_every_steps": 1})]
    study = grid_lib.load("gpu_study")
    return [dict(paradigm=r.paradigm, size=r.size, budget=r.budget,
                 overrides={**r.overrides, **synthetic}) for r in study.runs]


GRID_FILE = '''"""gpu_study on synthetic records, written by benchmarks/device_check.py."""
import json

RUNS = json.loads({runs!r})


def sweep(add):
    for run in RUNS:
        add(**run)
'''


def part_grid(args) -> None:
    workdir = os.path.join(args.workdir, "gpu_study")
    os.makedirs(workdir, exist_ok=True)
    grid_path = os.path.join(args.workdir, "gpu_study_check.py")
    with open(grid_path, "w") as f:
        f.write(GRID_FILE.format(runs=json.dumps(grid_runs(args.smoke))))
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / GRID_PARALLEL:.2f}")
    t0 = time.perf_counter()
    launcher = subprocess.Popen([sys.executable, "-m", "launch", f"--grid={grid_path}",
                                 f"--workdir={workdir}", f"--parallel={GRID_PARALLEL}",
                                 "--skip_eval"], cwd=REPO_ROOT, env=env, stdout=sys.stderr)
    try:
        rc = launcher.wait(timeout=args.grid_budget_s or None)
    except subprocess.TimeoutExpired:   # the runs checkpoint and stop; report what finished
        launcher.send_signal(signal.SIGINT)
        try:
            rc = launcher.wait(timeout=20)
        except subprocess.TimeoutExpired:
            launcher.send_signal(signal.SIGINT)   # a second Ctrl-C kills the runs
            rc = launcher.wait()
    wall_s = time.perf_counter() - t0
    runs = [_run_summary(os.path.join(workdir, "runs", name))
            for name in sorted(os.listdir(os.path.join(workdir, "runs")))]
    emit("gpu_study", {"launcher_rc": rc, "budget_s": args.grid_budget_s, "runs": len(runs),
                       "done": sum(r["status"] == "done" for r in runs), "wall_s": wall_s,
                       "train_flops": sum(r["train_flops"] for r in runs), "per_run": runs})


def _run_summary(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "status.json")) as f:
        status = json.load(f)
    rows = []
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    steady = [r for r in rows if "perf/mfu" in r][1:] or [r for r in rows if "perf/mfu" in r]
    last = rows[-1] if rows else {}
    return {"run": os.path.basename(run_dir), "status": status["status"],
            "step": last.get("step", 0), "train_flops": last.get("flops/train_cumulative", 0.0),
            "train_loss": last.get("train/loss"),
            "mfu": statistics.median(r["perf/mfu"] for r in steady) if steady else None,
            "step_time_s": statistics.median(r["perf/step_time_s"] for r in steady) if steady
            else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=PARTS, metavar="part",
                        help=f"one or more of {', '.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "device_check"))
    parser.add_argument("--grid_budget_s", type=float, default=0.0,
                        help="grid: stop the launcher (runs checkpoint) after this long; 0: never")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    elif "train" in args.parts:   # remat=auto chooses for 95 % of the GPU, not JAX's default 75 %
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for part in args.parts:
        globals()[f"part_{part}"](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
