"""Sampling cost of any paradigm: images/s at a batch of 64, batch-1 latency, analytic FLOPs.

    python benchmarks/sampling.py --config=experiments/ar.py:size=S [--batch=64] [--repeats=3]

Generates latents/tokens only (the autoencoder decoder is the same for every run of a kind and is
reported separately by the evaluator). For next-token prediction it also times the reference
sampler that recomputes the prefix every step, and reports the KV-cache speedup. Final line: one
JSON object with `images_per_s`, `latency_s`, `flops_per_image` (and `kv_cache_speedup`).
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


def timed(fn, *args, repeats):
    jax.block_until_ready(fn(*args))                 # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv):
    del argv
    result = measure(_CONFIG.value, _BATCH.value, _REPEATS.value)
    for k, v in result.items():
        print(f"{k:<24} {v:.4g}" if isinstance(v, float) else f"{k:<24} {v}")
    print(json.dumps(result))


def measure(config, batch: int, repeats: int) -> dict:
    """Images/s at `batch`, batch-1 latency and, for samplers with an uncached reference, the
    KV-cache speedup at `batch` (best of `repeats` timed calls after a compiling one)."""
    module = registry.paradigm_module(config)
    model = module.build(config, nnx.Rngs(0))
    rng = np.random.default_rng(0)

    def sampler(fn):
        return nnx.jit(lambda m, ids, mask, key: fn(m, ids, mask, key, config))

    def captions(n):
        c = base.example_captions(config, n, rng)
        return c["text_ids"], c["text_mask"]

    key = jax.random.key(0)
    fast = sampler(module.sample)
    batch_s = timed(fast, model, *captions(batch), key, repeats=repeats)
    latency_s = timed(fast, model, *captions(1), key, repeats=repeats)
    result = {"paradigm": config.paradigm, "size": config.size, "batch": batch,
              "dtype": config.model.dtype, "image_tokens": int(np.prod(base.latent_grid(config))),
              "sampler": config.sampler.to_dict(),
              "images_per_s": batch / batch_s, "latency_s": latency_s,
              "flops_per_image": module.inference_flops(config),
              "device": jax.devices()[0].device_kind}
    if hasattr(module, "sample_uncached"):
        slow_s = timed(sampler(module.sample_uncached), model, *captions(batch), key,
                       repeats=repeats)
        result["uncached_images_per_s"] = batch / slow_s
        result["kv_cache_speedup"] = slow_s / batch_s
    return result


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
