"""AdamW with warmup and a cosine, constant or warmup-stable-decay (WSD) schedule, plus clipping,
and the update step every trainer runs (gradient, optimizer, EMA).

WSD follows Hägele et al. 2024 (arXiv:2405.18392): constant after warm-up, then a cooldown over
the last `decay_fraction` of the steps, linear or 1 − sqrt, reaching the floor at the last update.
A run at constant rate with the same warm-up has the same rates up to where the cooldown begins,
so one such trunk serves many budgets (`schedules.cooldown_start`, imgsynth/registry.py).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth import phema
from imgsynth.schedules import cooldown_start, cooldown_steps, warmup_steps

SHAPES = ("linear", "1-sqrt")
NEVER = float(2 ** 30)   # a constant-rate run's cooldown start: never reached


def schedule_inputs(opt, total_steps: int) -> dict[str, np.float32]:
    """The numbers of `opt`'s schedule for a run of `total_steps`. The update step reads them as
    inputs, not constants, so every budget and cooldown branch of one model runs the same compiled
    step (one compilation, then the persistent cache)."""
    warmup = warmup_steps(opt, total_steps)
    if opt.schedule == "cosine":
        start, length = warmup, max(total_steps - warmup, 1)
    elif opt.schedule == "constant":
        start, length = NEVER, 1
    elif opt.schedule == "wsd":   # stable, then the cooldown ends at the floor at the last update
        start, length = cooldown_start(opt, total_steps), cooldown_steps(opt, total_steps)
    else:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; choose cosine, constant or wsd")
    values = {"warmup": warmup, "peak": opt.lr, "floor": opt.lr * opt.min_lr_ratio,
              "decay_start": start, "decay_steps": length}
    return {k: np.float32(v) for k, v in values.items()}


def decay_shape(opt) -> str:
    """The compiled part of a schedule: the decay's curve (a constant-rate trunk shares its
    branches' shape, so it shares their compilation too)."""
    shape = "cosine" if opt.schedule == "cosine" else opt.get("decay_shape", "linear")
    if shape not in ("cosine", *SHAPES):
        raise ValueError(f"optimizer.decay_shape={shape!r}; choose one of {SHAPES}")
    return shape


def learning_rate(shape: str, p: dict, step):
    """The rate of update `step` (0-based): linear warm-up from 0 (the first update already moves,
    at peak / warmup), the peak, then the decay from exactly the peak (a trunk's rate, bit for bit)
    to exactly the floor over `decay_steps` from `decay_start`."""
    t = jnp.asarray(step, jnp.float32) + 1.0
    frac = jnp.clip((t - p["decay_start"]) / p["decay_steps"], 0.0, 1.0)
    left = {"cosine": lambda f: 0.5 * (1.0 + jnp.cos(jnp.pi * f)), "linear": lambda f: 1.0 - f,
            "1-sqrt": lambda f: 1.0 - jnp.sqrt(f)}[shape](frac)
    decayed = jnp.where(frac <= 0.0, p["peak"], jnp.where(
        frac >= 1.0, p["floor"], p["floor"] + (p["peak"] - p["floor"]) * left))
    return jnp.where(t < p["warmup"], p["peak"] * t / jnp.maximum(p["warmup"], 1.0), decayed)


def schedule(opt, total_steps: int) -> optax.Schedule:
    """`opt`'s rate as a function of the step, for checks and plots (the update step computes the
    same from `schedule_inputs`)."""
    shape, inputs = decay_shape(opt), schedule_inputs(opt, total_steps)
    return lambda step: learning_rate(shape, inputs, step)


def _decay_mask(params):
    """Weight decay on kernels and embedding tables only, never on biases or norm scales.

    Decided by parameter name, since stacked (scanned) layers give biases a leading layer axis.
    """
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", key)))
    return jax.tree_util.tree_map_with_path(
        lambda path, _: name(path[-1]) in ("kernel", "embedding"), params)


def make(opt) -> optax.GradientTransformation:
    """Clipping and AdamW without its learning rate, which the update step applies
    (`learning_rate`)."""
    return optax.chain(
        optax.clip_by_global_norm(opt.clip_norm) if opt.clip_norm else optax.identity(),
        optax.scale_by_adam(b1=opt.b1, b2=opt.b2),
        optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask))


def make_update(config, loss, graphdef, total_steps: int, *, optimizer=None):
    """The state initialiser, the update step (optimizer, EMA) as pure functions, and the run's
    inputs of the step: `train_step(state, batch, inputs)`. The seed and the schedule's numbers
    are inputs, not constants, so runs of one model that differ only in them (budgets, cooldown
    branches, seed replicates) share one compiled step.

    `loss(model, batch, rng) -> (value, metrics)`. The state is a plain dict: params, their
    averages, optimizer state and step. The averages: with `config.ema` (generators) a tuple of
    power-function profiles, one per `config.ema.sigma_rels` (`imgsynth.phema`); otherwise one
    average of fixed decay `config.ema_decay` (autoencoders, instruments). `optimizer` =
    (tx, schedule) replaces the AdamW of `config.optimizer` (its schedule inside tx).
    """
    inputs = {"seed": np.uint32(config.seed)}
    if optimizer:
        tx, fixed = optimizer
        rate = lambda _, step: fixed(step)   # noqa: E731
    else:
        tx = make(config.optimizer)
        inputs |= schedule_inputs(config.optimizer, total_steps)
        rate = functools.partial(learning_rate, decay_shape(config.optimizer))

    exps = power_exponents(config)

    def init_state(params):
        ema = (tuple(jax.tree.map(jnp.copy, params) for _ in exps) if exps
               else jax.tree.map(jnp.copy, params))
        return {"params": params, "ema": ema, "opt": tx.init(params),
                "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, inputs):
        # Resume-safe: a function of the step.
        rng = jax.random.fold_in(jax.random.key(inputs["seed"]), state["step"])

        def loss_fn(params):
            return loss(nnx.merge(graphdef, params), batch, rng)

        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        lr = rate(inputs, state["step"])
        if not optimizer:   # what optax.scale_by_learning_rate does, with the rate an input
            updates = jax.tree.map(lambda u: jnp.asarray(-lr, u.dtype) * u, updates)
        params = optax.apply_updates(state["params"], updates)
        if exps:   # update t = step + 1; its decay makes the average the profile t^γ
            ema = tuple(optax.incremental_update(params, e, 1.0 - phema.beta(x, state["step"] + 1))
                        for x, e in zip(exps, state["ema"]))
        else:
            ema = optax.incremental_update(params, state["ema"], 1.0 - config.ema_decay)
        metrics = {f"train/{k}": v for k, v in aux.items()}
        metrics["train/grad_norm"] = optax.global_norm(grads)
        metrics["train/lr"] = lr
        return {"params": params, "ema": ema, "opt": opt, "step": state["step"] + 1}, metrics

    return init_state, train_step, inputs


def power_exponents(config) -> tuple[float, ...]:
    """γ of each power-function profile the run tracks (`config.ema.sigma_rels`); () for a run
    with a fixed-decay average."""
    if config.get("ema") is None:
        return ()
    sigmas = phema.check_sigma_rels(config.ema.sigma_rels, "ema.sigma_rels")
    return tuple(float(x) for x in phema.std_to_exp(sigmas))


def curve_average(state):
    """The average the evaluation-loss curve follows: the first power-function profile, or the
    fixed-decay average."""
    return state["ema"][0] if isinstance(state["ema"], tuple) else state["ema"]
