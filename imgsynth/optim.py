"""AdamW with warmup and a cosine, constant or warmup-stable-decay (WSD) schedule, plus clipping,
and the update step every trainer runs (gradient, optimizer, EMA).

WSD follows Hägele et al. 2024 (arXiv:2405.18392): constant after warm-up, then a cooldown over
the last `decay_fraction` of the steps, linear or 1 − sqrt, reaching the floor at the last update.
A run at constant rate with the same warm-up has the same rates up to where the cooldown begins,
so one such trunk serves many budgets (`cooldown_start`, imgsynth/registry.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

SHAPES = ("linear", "1-sqrt")


def warmup_steps(opt, total_steps: int) -> int:
    """`warmup_steps`, capped at `warmup_fraction` of the run (when > 0) and below its length, so
    no short run spends most of its steps warming up."""
    warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
    fraction = opt.get("warmup_fraction", 0.0)
    if fraction:
        warmup = min(warmup, max(int(fraction * total_steps), 1))
    return warmup


def cooldown_steps(opt, total_steps: int) -> int:
    """Updates a WSD run of `total_steps` spends decaying (`decay_fraction` of them, at least 1)."""
    return max(int(opt.decay_fraction * total_steps), 1)


def cooldown_start(opt, total_steps: int) -> int:
    """The step at which a WSD run of `total_steps` leaves the constant rate: its state there is a
    constant-rate trunk's state at the same step."""
    return total_steps - cooldown_steps(opt, total_steps)


def _cooldown(peak: float, floor: float, steps: int, shape: str) -> optax.Schedule:
    """From exactly `peak` at 0 (a trunk's rate, bit for bit) to exactly `floor` at `steps`."""
    if shape not in SHAPES:
        raise ValueError(f"optimizer.decay_shape={shape!r}; choose one of {SHAPES}")

    def lr(t):
        frac = jnp.clip(t / steps, 0.0, 1.0)
        left = 1.0 - (frac if shape == "linear" else jnp.sqrt(frac))
        return jnp.where(t <= 0, peak, jnp.where(t >= steps, floor, floor + (peak - floor) * left))
    return lr


def schedule(opt, total_steps: int) -> optax.Schedule:
    warmup = warmup_steps(opt, total_steps)
    peak, floor = opt.lr, opt.lr * opt.min_lr_ratio
    rest = max(total_steps - warmup, 1)
    if opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, rest, alpha=opt.min_lr_ratio)
    elif opt.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif opt.schedule == "wsd":   # stable, then the cooldown ends at the floor at the last update
        decay = cooldown_steps(opt, total_steps)
        main = optax.join_schedules(
            [optax.constant_schedule(peak),
             _cooldown(peak, floor, decay, opt.get("decay_shape", "linear"))],
            [total_steps - decay - warmup])
    else:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; choose cosine, constant or wsd")
    joined = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])
    return lambda step: joined(step + 1)   # the first update already moves (lr = peak / warmup)


def _decay_mask(params):
    """Weight decay on kernels and embedding tables only, never on biases or norm scales.

    Decided by parameter name, since stacked (scanned) layers give biases a leading layer axis.
    """
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", key)))
    return jax.tree_util.tree_map_with_path(
        lambda path, _: name(path[-1]) in ("kernel", "embedding"), params)


def make(opt, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    lr = schedule(opt, total_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(opt.clip_norm) if opt.clip_norm else optax.identity(),
        optax.adamw(lr, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay, mask=_decay_mask))
    return tx, lr


def make_update(config, loss, graphdef, total_steps: int, *, optimizer=None):
    """The state initialiser and the update step (optimizer, EMA) as pure functions.

    `loss(model, batch, rng) -> (value, metrics)`. The state is a plain dict: params, their EMA
    (decay `config.ema_decay`), optimizer state and step. `optimizer` = (tx, schedule) replaces
    the AdamW of `config.optimizer`.
    """
    tx, lr_schedule = optimizer or make(config.optimizer, total_steps)
    base_key = jax.random.key(config.seed)

    def init_state(params):
        return {"params": params, "ema": jax.tree.map(jnp.copy, params), "opt": tx.init(params),
                "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch):
        rng = jax.random.fold_in(base_key, state["step"])   # resume-safe: a function of the step

        def loss_fn(params):
            return loss(nnx.merge(graphdef, params), batch, rng)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        ema = optax.incremental_update(params, state["ema"], 1.0 - config.ema_decay)
        metrics = {f"train/{k}": v for k, v in aux.items()}
        metrics["train/grad_norm"] = optax.global_norm(grads)
        metrics["train/lr"] = lr_schedule(state["step"])
        return {"params": params, "ema": ema, "opt": opt, "step": state["step"] + 1}, metrics

    return init_state, train_step
