"""Training-step throughput of the backbone against a measured matmul peak (MFU).

    python benchmarks/backbone_throughput.py [--size=M] [--global_batch_size=64] [--steps=10]

Times the full update (forward, backward, AdamW) of the flow-matching model at a ladder size and
a large matmul on the same device in the same process; prints a table and a final JSON line with
`achieved_flops_per_s`, `peak_flops_per_s` and `mfu`.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth import config as config_lib, optim, perf, registry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=registry.CPU_SIZES[-1])
    parser.add_argument("--paradigm", default="flow")
    parser.add_argument("--global_batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    config = config_lib.default_config(args.paradigm, f"size={args.size},"
                                       f"global_batch_size={args.global_batch_size}")
    config.model.dtype = args.dtype
    result = measure(config, args.steps)
    for k, v in result.items():
        print(f"{k:<24} {v:.4g}" if isinstance(v, float) else f"{k:<24} {v}")
    print(json.dumps(result))


def measure(config, steps: int, peak: float | None = None) -> dict:
    """Times `steps` update steps of `config`'s model (after one compiling step) on one device.

    `peak`: the device's measured matmul FLOP/s in the model's dtype (measured here if None).
    """
    module = registry.paradigm_module(config)
    cost = module.model_cost(config)
    graphdef, params = nnx.split(module.build(config, nnx.Rngs(0)))
    tx = optax.chain(optim.make(config.optimizer), optax.scale_by_learning_rate(config.optimizer.lr))
    opt = tx.init(params)
    batch = _batch(config, config.global_batch_size)

    @jax.jit
    def step(params, opt, batch, key):
        def loss_fn(p):
            return module.loss(nnx.merge(graphdef, p), batch, key, config)[0]
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    key = jax.random.key(0)
    t0 = time.perf_counter()
    params, opt, loss = step(params, opt, batch, key)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        params, opt, loss = step(params, opt, batch, jax.random.fold_in(key, i))
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    flops_per_step = cost.train_flops_per_example * config.global_batch_size
    achieved = flops_per_step / step_s
    peak = peak or perf.measure_device_peak(getattr(jnp, config.model.dtype))
    return {"size": config.size, "paradigm": config.paradigm,
            "global_batch_size": config.global_batch_size, "dtype": config.model.dtype,
            "params_total": cost.params_total, "train_flops_per_step": flops_per_step,
            "step_time_s": step_s, "compile_s": compile_s, "achieved_flops_per_s": achieved,
            "peak_flops_per_s": peak, "mfu": achieved / peak, "loss": float(loss),
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def _batch(config, n):
    rng = np.random.default_rng(0)
    module = registry.paradigm_module(config)
    return module.example_batch(config, n, rng)


if __name__ == "__main__":
    main()
