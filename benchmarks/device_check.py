"""The parts of `device_check.sh`, each ending with one JSON line (`"part": ...`).

    python benchmarks/device_check.py PART [PART...] [--smoke] [--workdir=DIR]

env     the device, jax/jaxlib/CUDA/cuDNN versions, and the measured bfloat16 matmul peak
train   training MFU (against that peak) of a ~300M-parameter model, flow and next-token,
        at 256 image tokens (width 1024, 16 layers, 16 heads; caption encoder 4 layers), batch
        128; then flow at batch 256 and 512 with the rematerialisation `model.remat=auto`
        chooses for the device's memory (`train_remat`)
sample  images/s at a batch of 256 per paradigm at 256 tokens, and the next-token KV-cache
        speedup at a batch of 64 (cached decoding vs recomputing the prefix every token)

The study itself (data, grid, evaluation, report) is benchmarks/device_run.sh's. `--smoke` runs
every part at tiny sizes (size T at 64 tokens, sampling at batch 1 with its latency): on a CPU in
a few minutes, so the script is exercised by the test suite and cannot rot. The parts reuse
benchmarks/backbone_throughput.py, benchmarks/sampling.py and imgsynth/perf.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("env", "train", "sample")


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
              "cudnn": cudnn_version(), "nvidia_smi": nvidia_smi()}
    emit("env", result)
    peak = measured_peak(args.smoke)
    emit("peak", {"dtype": "bfloat16", "peak_flops_per_s": peak, "device_kind": device.device_kind})


def cudnn_version():
    try:   # jaxlib's own record of the cuDNN it loaded; absent without CUDA
        from jax._src.lib import cuda_versions
        return cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception:   # noqa: BLE001  (a missing or changed private module: just not reported)
        return None


def nvidia_smi():
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=PARTS, metavar="part",
                        help=f"one or more of {', '.join(PARTS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "device_check"))
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
