"""Sampling cost of any paradigm: images/s at a batch of 64, batch-1 latency, analytic FLOPs.

    python benchmarks/sampling.py --config=experiments/ar.py:size=S [--batch=64] [--repeats=3] \
        [--kv_batch=N]

Generates latents/tokens only (the autoencoder decoder is the same for every run of a kind and is
reported separately by the evaluator). For next-token prediction it also times the reference
sampler that recomputes the prefix every step, and reports the KV-cache speedup (at `--kv_batch`,
default `--batch`). Final line: one JSON object with `images_per_s`, `latency_s`,
`flops_per_image` (and `kv_cache_speedup`).
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from imgsynth import registry
from imgsynth.paradigms import base

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
_BATCH = flags.DEFINE_integer("batch", 64, "Images per sampling call for throughput.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (the best is reported).")
_KV_BATCH = flags.DEFINE_integer("kv_batch", 0, "Batch of the KV-cache comparison (0: --batch).")


def compiled(fn, model, *args):
    """`fn(model, *args)` compiled ahead of time (no untimed run: a batch of 256 costs seconds);
    returns a function of `args` only."""
    graphdef, state = nnx.split(model)
    program = jax.jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a))
    executable = program.lower(state, *args).compile()
    return lambda *a: executable(state, *a)


def timed(fn, *args, repeats):
    """Best wall time of `repeats` calls of `fn(*args)` (compiled already)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv):
    del argv
    result = measure(_CONFIG.value, _BATCH.value, _REPEATS.value, kv_batch=_KV_BATCH.value or None)
    for k, v in result.items():
        print(f"{k:<24} {v:.4g}" if isinstance(v, float) else f"{k:<24} {v}")
    print(json.dumps(result))


def measure(config, batch: int, repeats: int, *, latency: bool = True,
            kv_batch: int | None = None) -> dict:
    """Images/s at `batch`, batch-1 latency (unless not `latency`) and, for samplers with an
    uncached reference, the KV-cache speedup at `kv_batch` (default `batch`): best of `repeats`
    timed calls of a program compiled ahead of time."""
    module = registry.paradigm_module(config)
    model = module.build(config, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    key = jax.random.key(0)

    def seconds(fn, n):
        c = base.example_captions(config, n, rng)
        args = (c["text_ids"], c["text_mask"], key)
        call = compiled(lambda m, ids, mask, k: fn(m, ids, mask, k, config), model, *args)
        return timed(call, *args, repeats=repeats)

    batch_s = seconds(module.sample, batch)
    result = {"paradigm": config.paradigm, "size": config.size, "batch": batch,
              "dtype": config.model.dtype, "image_tokens": int(np.prod(base.latent_grid(config))),
              "sampler": config.sampler.to_dict(), "images_per_s": batch / batch_s,
              "flops_per_image": module.inference_flops(config),
              "device": jax.devices()[0].device_kind}
    if latency:
        result["latency_s"] = seconds(module.sample, 1)
    if hasattr(module, "sample_uncached"):
        kv_batch = kv_batch or batch
        cached_s = batch_s if kv_batch == batch else seconds(module.sample, kv_batch)
        slow_s = seconds(module.sample_uncached, kv_batch)
        result.update(kv_batch=kv_batch, kv_images_per_s=kv_batch / cached_s,
                      uncached_images_per_s=kv_batch / slow_s,
                      kv_cache_speedup=slow_s / cached_s)
    return result


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
