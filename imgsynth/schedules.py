"""The step arithmetic of the learning-rate schedules, without JAX: the registry and the launcher
plan warm-ups, cooldowns and fork steps with it in processes that never train."""
from __future__ import annotations


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
