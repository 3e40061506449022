"""Config helpers: typed `key=value,flag` arguments, durations, and validation before compiling.

Config files are big_vision style: `experiments/flow.py:size=S,runlocal` calls `get_config("size=S,
runlocal")`; every value in the string is parsed with the type of its default, and a bare key means
True. Command-line overrides (`--config.optimizer.lr=3e-4`) come from ml_collections' config flags.
"""
from __future__ import annotations

import ast
import importlib
import math
from typing import Any

import ml_collections

# Images per weight set (raw and EMA) that `imgsynth.evaluate` samples unless told otherwise; the
# launcher's ETA counts with it too.
EVAL_SAMPLES = 300


def eval_samples(settings, num_samples: int | None = None) -> dict[str, int]:
    """Images sampled per weight set `settings.weights` of a config's `eval`: the EMA's
    `num_samples` prompts; the raw weights' the first `raw_samples` of them (0, or more than
    there are: all). Raw weights serve only the EMA-vs-raw comparison, made on those prompts for
    both."""
    num_samples = num_samples or settings.get("num_samples") or EVAL_SAMPLES
    raw = settings.get("raw_samples") or 0
    if raw < 0:
        raise ConfigError(f"eval.raw_samples={raw}: choose how many of the prompts the raw "
                          "weights sample, or 0 for all of them")
    counts = {"raw": min(raw or num_samples, num_samples), "ema": num_samples}
    return {w: counts[w] for w in counts if w in tuple(settings.get("weights") or counts)}


class ConfigError(ValueError):
    """A config that cannot run; raised before anything is compiled or written."""


def _parse_value(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = text.lower()
        if low in ("true", "1", "yes", ""):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"argument {key}={text!r}: expected a boolean")
    if isinstance(default, int):
        try:
            return int(float(text)) if "e" in text.lower() else int(text)
        except ValueError:
            raise ConfigError(f"argument {key}={text!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"argument {key}={text!r}: expected a number") from None
    if isinstance(default, (tuple, list)):
        return type(default)(ast.literal_eval(text.replace(";", ",")))
    return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses `"size=S,runlocal"` into a ConfigDict typed from `defaults`; unknown keys are errors.

    Tuples are written with `;` between items (`mesh=(1;-1;1)`), since `,` separates arguments.
    """
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, text = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ConfigError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        out[key] = _parse_value(key, text.strip(), defaults[key]) if "=" in item else True
        if "=" not in item and not isinstance(defaults[key], bool):
            raise ConfigError(f"config argument {key!r} needs a value ({key}=...)")
    return ml_collections.ConfigDict(out)


# Durations --------------------------------------------------------------------------------------

DURATION_KEYS = ("total_steps", "total_examples", "total_flops")


def resolve_steps(config: ml_collections.ConfigDict, train_flops_per_example: float) -> int:
    """Converts the one duration the config gives (steps, examples or FLOPs) into optimizer steps.

    Examples and FLOPs round *down* to whole steps, so a run never spends more than its budget.
    """
    given = {k: config.get(k) for k in DURATION_KEYS if config.get(k) is not None}
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of {DURATION_KEYS}; got {sorted(given) or 'none'}")
    (key, value), = given.items()
    batch = config.global_batch_size
    if float(value) <= 0:
        raise ConfigError(f"{key}={value:g} is not positive: a run needs a budget above zero")
    if key == "total_steps":
        steps = int(value)
    elif key == "total_examples":
        steps = int(value) // batch
    else:
        steps = math.floor(float(value) / (train_flops_per_example * batch))
    if steps < 1:
        per_step = train_flops_per_example * batch
        raise ConfigError(
            f"{key}={value:g} is less than one training step ({per_step:.3g} FLOPs or {batch} "
            f"examples at global_batch_size={batch}); raise the budget or shrink the batch/model")
    return steps


# Validation -------------------------------------------------------------------------------------

def validate(config: ml_collections.ConfigDict, *, data_parallel: int,
             tensor_parallel: int = 1) -> None:
    """Checks that need no compilation: batch divisibility and attention/MLP geometry."""
    batch = config.global_batch_size
    if batch <= 0 or batch % data_parallel:
        raise ConfigError(
            f"global_batch_size={batch} is not divisible by the {data_parallel} data-parallel "
            f"devices (mesh 'data' x 'fsdp'); use a multiple of {data_parallel}")
    for name in ("model", "text"):
        sub = config.get(name)
        if sub is not None and sub.width % sub.heads:
            raise ConfigError(
                f"{name}.heads={sub.heads} does not divide {name}.width={sub.width}")
        if sub is not None and (sub.heads % tensor_parallel or sub.mlp_dim % tensor_parallel):
            raise ConfigError(
                f"the mesh 'tensor' axis ({tensor_parallel}) must divide {name}.heads="
                f"{sub.heads} and {name}.mlp_dim={sub.mlp_dim}; change mesh or size")


# Experiment files ------------------------------------------------------------------------------

def default_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """`experiments/<name>.py:<arg>` as a config — what `--config=experiments/<name>.py:<arg>`
    gives on a command line, for grids and tests that build runs in Python."""
    try:
        module = importlib.import_module(f"experiments.{name}")
    except ModuleNotFoundError as e:
        if e.name in ("experiments", f"experiments.{name}"):
            raise ConfigError(f"unknown paradigm {name!r}: no experiments/{name}.py (install the "
                              "repository checkout with `pip install -e .`)") from None
        raise
    return module.get_config(arg)
