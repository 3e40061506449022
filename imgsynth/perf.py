"""Measured peak FLOP/s of the devices, the denominator of MFU.

A large matmul in the training dtype, timed after compilation: what the hardware delivers to
dense linear algebra here, not a datasheet number.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp


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


def job_peak(device_peak: float) -> float:
    """Peak of the whole job. Fake CPU devices share one host's cores, so a host counts once."""
    if jax.default_backend() == "cpu":
        return device_peak * jax.process_count()
    return device_peak * jax.device_count()
