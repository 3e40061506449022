"""AdamW with warmup and a cosine, constant or warmup-stable-decay (WSD) schedule, plus clipping."""
from __future__ import annotations

import jax
import optax


def schedule(opt, total_steps: int) -> optax.Schedule:
    warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
    peak, floor = opt.lr, opt.lr * opt.min_lr_ratio
    rest = max(total_steps - warmup, 1)
    if opt.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, rest, alpha=opt.min_lr_ratio)
    elif opt.schedule == "constant":
        main = optax.constant_schedule(peak)
    elif opt.schedule == "wsd":   # stable, then a linear decay over the last `decay_fraction`
        decay = max(int(rest * opt.decay_fraction), 1)
        main = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)],
            [rest - decay])
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
