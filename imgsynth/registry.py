"""The size ladder (the same names for every paradigm) and the FLOP-budget planner.

A size fixes the generator backbone and its caption encoder; a paradigm only adds its heads. The
planner turns (paradigm config, size, FLOP budget, global batch) into optimizer steps using the
analytic FLOPs of `imgsynth/flops.py`, so every run of a grid spends the same compute per budget.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import ml_collections

from imgsynth import config as config_lib, schedules


@dataclasses.dataclass(frozen=True)
class Size:
    width: int
    depth: int
    heads: int
    text_depth: int
    mlp_ratio: int = 4


SIZES: dict[str, Size] = {
    # CPU ladder: trains on a 2-core laptop in minutes.
    "T": Size(width=64, depth=2, heads=2, text_depth=1),
    "XS": Size(width=128, depth=4, heads=4, text_depth=1),
    "S": Size(width=192, depth=6, heads=6, text_depth=2),
    "M": Size(width=256, depth=8, heads=8, text_depth=2),
    # Accelerator ladder, up to paper scale (DiT-XL is 1152 x 28).
    "L": Size(width=512, depth=12, heads=8, text_depth=3),
    "XL": Size(width=768, depth=16, heads=12, text_depth=4),
    "XXL": Size(width=1024, depth=24, heads=16, text_depth=6),
    "3XL": Size(width=1152, depth=28, heads=16, text_depth=7),
    "4XL": Size(width=1536, depth=32, heads=24, text_depth=8),
}
CPU_SIZES = ("T", "XS", "S", "M")
# Every paradigm module in imgsynth/paradigms/: the paper's three, then the two that complete the
# {discrete, continuous} × {raster, random order} square (docs/square.md).
PARADIGMS = ("flow", "maskgit", "ar", "ar_continuous", "mar")


def get_size(name: str) -> Size:
    if name not in SIZES:
        raise KeyError(f"unknown size {name!r}; the ladder is {list(SIZES)}")
    return SIZES[name]


def apply_size(config: ml_collections.ConfigDict, name: str) -> None:
    """Writes a ladder size into `config.model` (generator) and `config.text` (caption encoder)."""
    size = get_size(name)
    config.size = name
    config.model.width, config.model.depth, config.model.heads = size.width, size.depth, size.heads
    config.model.mlp_dim = size.mlp_ratio * size.width
    config.text.width, config.text.heads = size.width, size.heads
    config.text.depth, config.text.mlp_dim = size.text_depth, size.mlp_ratio * size.width


def paradigm_module(config: ml_collections.ConfigDict):
    """The paradigm plug-in named by `config.paradigm` (a module in imgsynth/paradigms/)."""
    try:
        return importlib.import_module(f"imgsynth.paradigms.{config.paradigm}")
    except ModuleNotFoundError as e:
        if e.name == f"imgsynth.paradigms.{config.paradigm}":
            raise KeyError(f"unknown paradigm {config.paradigm!r}: no module imgsynth/paradigms/"
                           f"{config.paradigm}.py") from None
        raise


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything decided about a generator run before anything is compiled."""
    module: Any                  # the paradigm module (satisfies paradigms.base.Paradigm)
    cost: Any                    # flops.ModelCost
    total_steps: int
    keep_steps: tuple[int, ...]  # steps to checkpoint forever (cumulative FLOPs in keep_flops)
    flops_per_step: float        # training FLOPs of one optimizer step (global batch)


def plan(config: ml_collections.ConfigDict) -> Plan:
    """The one place a run's steps, keep-steps and costs are computed; config errors raise here.

    Keep steps: where cumulative FLOPs pass `keep_flops`, and for a trunk the steps its cooldown
    branches fork at (`fork_budgets`)."""
    module = paradigm_module(config)
    cost = module.model_cost(config)
    total_steps = config_lib.resolve_steps(config, cost.train_flops_per_example)
    per_step = cost.train_flops_per_example * config.global_batch_size
    keep = {min(total_steps, math.floor(b / per_step)) for b in config.keep_flops if b >= per_step}
    for budget in config.get("fork_budgets", ()):
        step = fork_step(config.optimizer, math.floor(budget / per_step), budget)
        if step > total_steps:
            raise config_lib.ConfigError(
                f"branch budget {budget:.3g} forks at step {step}, beyond the trunk's "
                f"{total_steps} steps; give the trunk at least {step} steps")
        keep.add(step)
    fork = config.get("fork_from")
    if fork is not None and fork.workdir:
        check_fork(config.optimizer, total_steps, fork.step)
    return Plan(module, cost, total_steps, tuple(sorted(keep)), per_step)


def fork_step(opt, total_steps: int, budget: float | None = None) -> int:
    """Where a WSD run of `total_steps` (budget `budget`) leaves the constant rate: the trunk step
    its cooldown branch starts from. A run too short for warm-up plus cooldown is refused."""
    start = schedules.cooldown_start(opt, total_steps)
    warmup = schedules.warmup_steps(opt, total_steps)
    if start < max(warmup, 1):
        what = f"budget {budget:.3g} ({total_steps} steps)" if budget else f"{total_steps} steps"
        raise config_lib.ConfigError(
            f"{what} is less than warm-up ({warmup}) + cooldown "
            f"({schedules.cooldown_steps(opt, total_steps)} steps, decay_fraction="
            f"{opt.decay_fraction}): raise the budget or shorten them")
    return start


def check_fork(opt, total_steps: int, step: int) -> None:
    """A branch must fork inside its own constant-rate phase, after warm-up."""
    if opt.schedule != "wsd":
        raise config_lib.ConfigError(
            f"fork_from is set but optimizer.schedule={opt.schedule!r}: a cooldown branch runs "
            "the wsd schedule")
    start = fork_step(opt, total_steps)
    if not schedules.warmup_steps(opt, total_steps) <= step <= start or step < 1:
        raise config_lib.ConfigError(
            f"fork_from.step={step} is outside this run's constant-rate phase (steps "
            f"{schedules.warmup_steps(opt, total_steps)}..{start} of {total_steps})")


def steps_for_budget(config: ml_collections.ConfigDict, budget_flops: float) -> int:
    """Whole optimizer steps `config` gets for a training budget of `budget_flops` (rounded down)."""
    probe = ml_collections.ConfigDict(config.to_dict())
    probe.total_steps = probe.total_examples = None
    probe.total_flops = budget_flops
    return plan(probe).total_steps
