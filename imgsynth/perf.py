"""Measured peak FLOP/s of the devices, the denominator of MFU, and what a process records about
its own cost (start time, cores) for the study's efficiency (benchmarks/study_efficiency.py).

A large matmul in the training dtype, timed after compilation: what the hardware delivers to
dense linear algebra here, not a datasheet number; measured once per machine and kept in the
cache dir, so MFU has one denominator across the runs of a grid.
"""
from __future__ import annotations

import os
import socket
import time

import jax
import jax.numpy as jnp

from imgsynth import io


def measure_device_peak(dtype=jnp.float32, n: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of one device on an n×n matmul (best of `repeats`, after compilation)."""
    if n is None:
        n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.device_put(jnp.ones((n, n), dtype), jax.local_devices()[0])
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


PEAK_FILE = "device_peak.json"


def cached_device_peak(dtype, cache_dir: str | None, remeasure: bool = False) -> float:
    """`measure_device_peak`, measured once per host, device kind, dtype and core count and kept
    in `<cache_dir>/device_peak.json`: every training process divides by it, and measuring it
    cost each one ~2 s of start-up. Without a cache dir it is measured every time.

    A peak is the best the hardware delivers, and a measurement taken while something else held
    the core reads low (one such read 33 GFLOP/s for a core that delivers 92): the file keeps
    the highest value measured, and `remeasure` (the launcher's stages, before any run starts)
    measures again and keeps the better of the two."""
    if not cache_dir:
        return measure_device_peak(dtype)
    device = jax.local_devices()[0]
    key = (f"{socket.gethostname()}/{jax.default_backend()}/{device.device_kind}/"
           f"{jnp.dtype(dtype).name}/{cores()}")
    path = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), PEAK_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with io.FileLock(path):   # one measurement at a time: a sibling's would share the cores
        peaks = io.read_json(path, {})
        if key not in peaks or remeasure:
            peaks[key] = max(peaks.get(key, 0.0), measure_device_peak(dtype))
            io.write_json(path, peaks)
    return float(peaks[key])


def training_peak(config, remeasure: bool = False) -> float:
    """The peak FLOP/s of a training job of `config`, what its MFU divides by:
    `config.peak_flops_per_s` where given, else measured in the model's dtype (see
    `cached_device_peak`) for the whole job."""
    if config.get("peak_flops_per_s"):
        return float(config.peak_flops_per_s)
    dtype = getattr(jnp, config.model.dtype) if "model" in config else jnp.float32
    return job_peak(cached_device_peak(dtype, config.get("cache_dir"), remeasure=remeasure))


def job_peak(device_peak: float) -> float:
    """Peak of the whole job. Fake CPU devices share one host's cores, so a host counts once."""
    if jax.default_backend() == "cpu":
        return device_peak * jax.process_count()
    return device_peak * jax.device_count()


_IMPORTED = time.time()


def process_start() -> float:
    """Epoch seconds at which this process started, so start-up (imports, restoring, compiling)
    counts: on Linux its start in clock ticks since boot (/proc/self/stat) against the boot clock;
    elsewhere when this module was imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


def cores() -> int:
    """The compute this process holds, the unit of core-time: CPU cores it may run on (the
    launcher pins each parallel run to its share) on the CPU backend, else its local devices."""
    if jax.default_backend() != "cpu":
        return jax.local_device_count()
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
