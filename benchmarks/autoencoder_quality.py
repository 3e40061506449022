"""Autoencoder quality for a fixed training time: PSNR and (LFQ) codebook usage on validation images.

    python benchmarks/autoencoder_quality.py [--kind=kl|lfq|both] [--minutes=10]
        [--set autoencoder.channels=64 --set optimizer.lr=1e-3 ...]

Trains each autoencoder of experiments/autoencoder.py for `--minutes` of wall-clock time (compile
excluded and reported apart; the learning rate follows a warm-up + cosine schedule over the time
budget, so a slower machine gets fewer steps but a complete schedule), then evaluates the EMA
weights on the validation split of the shapes dataset. PSNR is computed from the mean squared
error over the whole split (images in [-1, 1], peak-to-peak 2). The final stdout line is JSON.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import autoencoder as ae_config  # noqa: E402
from imgsynth.models import autoencoder as ae_lib  # noqa: E402

CORES = len(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

def load_images(config_data, split: str, n: int) -> np.ndarray:
    """The first `n` images of a split of the built dataset, uint8 (n, H, W, 3)."""
    from imgsynth.data import build, pipeline
    build.build_if_missing(config_data, log=print)
    source = pipeline.load_split(config_data, split)
    if n > len(source):
        raise ValueError(f"asked for {n} {split} images, the dataset has {len(source)}")
    return np.stack([r["image"] for r in source.__getitems__(range(n))])


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def _lr(config: ml_collections.ConfigDict, step: int, fraction: float) -> float:
    """Linear warm-up over steps, then cosine decay to 0 over the fraction of the time budget."""
    warmup = min(1.0, (step + 1) / max(config.optimizer.warmup_steps, 1))
    return config.optimizer.lr * warmup * 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0)))


def train(config: ml_collections.ConfigDict, train_images: np.ndarray, minutes: float):
    """Trains for `minutes` of wall-clock time; returns the EMA model and throughput figures."""
    model = ae_lib.build_autoencoder(config.autoencoder, nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = config.optimizer
    tx = optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, b1=opt.b1, b2=opt.b2,
                                               weight_decay=opt.weight_decay))
    opt_state = tx.init(params)
    ema = jax.tree.map(jnp.copy, params)

    def step_fn(params, opt_state, ema, images_u8, rng, lr, ema_decay):
        images = images_u8.astype(jnp.float32) / 127.5 - 1.0

        def loss_fn(p):
            return nnx.merge(graphdef, p, rest).loss(images, rng)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        opt_state[1].hyperparams["learning_rate"] = lr
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
        return params, opt_state, ema, aux

    batch = config.global_batch_size
    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    example = (params, opt_state, ema, train_images[:batch], key, jnp.float32(0), jnp.float32(0))
    t0 = time.perf_counter()
    step = jax.jit(step_fn, donate_argnums=(0, 1, 2)).lower(*example).compile()
    compile_s = time.perf_counter() - t0

    # The budget is CPU time / cores: on an idle machine that is wall-clock time, and a machine
    # shared with other jobs still grants the run the same amount of computation.
    budget_s, steps, aux = 60.0 * minutes * CORES, 0, None
    start, start_cpu = time.perf_counter(), time.process_time()
    while (used := time.process_time() - start_cpu) < budget_s:
        images = train_images[rng.integers(0, len(train_images), batch)]
        decay = min(config.ema_decay, (1.0 + steps) / (10.0 + steps))
        params, opt_state, ema, aux = step(
            params, opt_state, ema, images, jax.random.fold_in(key, steps),
            jnp.float32(_lr(config, steps, used / budget_s)), jnp.float32(decay))
        steps += 1
        jax.block_until_ready(aux)  # keep the clock honest: no queue of dispatched steps
        if steps % config.log_every_steps == 0:
            aux = jax.device_get(aux)
            print(f"  step {steps:5d}  {used / CORES:6.0f}s  loss {aux['loss']:.4f}  "
                  f"psnr {aux['psnr']:.2f}", flush=True)
    jax.block_until_ready(params)
    train_s = (time.process_time() - start_cpu) / CORES
    model = nnx.merge(graphdef, ema, rest)
    return model, {"steps": steps, "train_minutes": train_s / 60.0, "compile_s": compile_s,
                   "wall_minutes": (time.perf_counter() - start) / 60.0,
                   "images_per_s": steps * batch / train_s,
                   "n_params": sum(p.size for p in jax.tree.leaves(params))}


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

def evaluate(model: ae_lib.Autoencoder, images: np.ndarray, batch: int = 250) -> dict[str, float]:
    """PSNR over the split; KL: mean KL and latent std; LFQ: code usage and perplexity."""
    @nnx.jit
    def run(model, images_u8):
        x = images_u8.astype(jnp.float32) / 127.5 - 1.0
        z = model.encode(x)
        err = jnp.sum(jnp.square(model.decode(z) - x))
        if model.kind == "kl":
            mean, logvar = model.posterior(x)
            return err, z, ae_lib.gaussian_kl(mean, logvar)
        return err, z, jnp.float32(0)

    sq_err, kls, latents = 0.0, [], []
    for i in range(0, len(images), batch):
        err, z, kl = run(model, images[i:i + batch])
        sq_err += float(err)
        kls.append(float(kl) * len(z))
        latents.append(np.asarray(z))
    mse = sq_err / images.size
    out = {"psnr": float(ae_lib.psnr(mse)), "mse": mse}
    z = np.concatenate(latents)
    if model.kind == "kl":
        out.update(kl=sum(kls) / len(images), latent_std=float(z.std()))
    else:
        out.update(ae_lib.code_usage(z, model.codebook_size))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="both", choices=("kl", "lfq", "both"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--config_arg", default="", help="argument of experiments/autoencoder.py")
    parser.add_argument("--data_dir", default="",
                        help="where the shapes dataset is (built there if missing); default: "
                             "config.data.data_dir, else <cache_dir>/data")
    parser.add_argument("--num_train", type=int, default=50_000)
    parser.add_argument("--num_validation", type=int, default=1_000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. autoencoder.channels=64 (repeatable)")
    args = parser.parse_args()
    kinds = ("kl", "lfq") if args.kind == "both" else (args.kind,)

    configs = {}
    for kind in kinds:
        config = ae_config.get_config(",".join(filter(None, [f"kind={kind}", args.config_arg])))
        for item in args.set:
            key, _, text = item.partition("=")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        configs[kind] = config

    data = configs[kinds[0]].data
    if args.data_dir or not data.data_dir:
        data.data_dir = args.data_dir or os.path.join(
            os.path.expanduser(configs[kinds[0]].cache_dir), "data")
    t0 = time.perf_counter()
    train_images = load_images(data, "train", args.num_train)
    val_images = load_images(data, "validation", args.num_validation)
    print(f"data: {len(train_images)} train / {len(val_images)} validation images of "
          f"{data.data_dir} ({data.builder_config}) ({time.perf_counter() - t0:.0f}s)", flush=True)

    rows, result = [], {}
    for kind in kinds:
        config = configs[kind]
        print(f"[{kind}] {config.autoencoder.to_dict()}  batch {config.global_batch_size}  "
              f"lr {config.optimizer.lr}", flush=True)
        model, stats = train(config, train_images, args.minutes)
        metrics = evaluate(model, val_images)
        rows.append((kind, stats, metrics))
        result[f"{kind}_psnr"] = round(metrics["psnr"], 3)
        result[f"{kind}_mse"] = metrics["mse"]
        if kind == "kl":
            result.update(kl_kl=metrics["kl"], kl_latent_std=metrics["latent_std"])
        else:
            result.update(lfq_code_usage=metrics["code_usage"],
                          lfq_perplexity=metrics["perplexity"])
        result.update({f"{kind}_train_minutes": round(stats["train_minutes"], 2),
                       f"{kind}_steps": stats["steps"],
                       f"{kind}_images_per_s": round(stats["images_per_s"], 1),
                       f"{kind}_n_params": stats["n_params"]})

    print(f"\n{'kind':5} {'params':>9} {'steps':>6} {'img/s':>7} {'min':>5} {'PSNR':>6} "
          f"{'MSE':>9}  extra")
    for kind, stats, m in rows:
        extra = (f"KL {m['kl']:.3f}  latent std {m['latent_std']:.3f}" if kind == "kl" else
                 f"usage {100 * m['code_usage']:.1f}%  perplexity {m['perplexity']:.0f}")
        print(f"{kind:5} {stats['n_params']:9d} {stats['steps']:6d} {stats['images_per_s']:7.1f} "
              f"{stats['train_minutes']:5.1f} {m['psnr']:6.2f} {m['mse']:9.2e}  {extra}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
