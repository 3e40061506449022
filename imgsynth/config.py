"""Config helpers: typed `key=value,flag` arguments, durations, and validation before compiling.

Config files are big_vision style: `experiments/flow.py:size=S,runlocal` calls `get_config("size=S,
runlocal")`; every value in the string is parsed with the type of its default, and a bare key means
True. Command-line overrides (`--config.optimizer.lr=3e-4`) come from ml_collections' config flags.
"""
from __future__ import annotations

import ast
import math
from typing import Any

import ml_collections

# Images per weight set (raw and EMA) that `imgsynth.evaluate` samples unless told otherwise; the
# launcher's ETA counts with it too.
EVAL_SAMPLES = 300


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


# Defaults shared by every paradigm ----------------------------------------------------------------

ARG_DEFAULTS = dict(size="S", runlocal=False, budget=0.0, steps=0, seed=0, global_batch_size=0)


def default_config(paradigm: str, arg: str | None = None, **arg_defaults) -> ml_collections.ConfigDict:
    """The full config of a generator run; paradigm config files adjust it.

    `arg` keys: `size` (a ladder name), `runlocal` (tiny everything, for a laptop), `budget` (total
    training FLOPs), `steps`, `seed`, `global_batch_size`, plus any the paradigm file adds.
    """
    from imgsynth import registry

    args = parse_arg(arg, **{**ARG_DEFAULTS, **arg_defaults})
    c = ml_collections.ConfigDict()
    c.paradigm = paradigm
    c.size = args.size
    c.seed = args.seed
    c.global_batch_size = args.global_batch_size or 128
    c.total_steps = None
    c.total_examples = None
    c.total_flops = None
    c.keep_flops = ()           # also checkpoint when cumulative training FLOPs pass these
    c.grid = ml_collections.ConfigDict({"name": "", "budget": 0.0, "ablation": {}})

    c.model = ml_collections.ConfigDict(dict(
        width=0, depth=0, heads=0, mlp_dim=0, dtype="float32", scan_layers=True, remat=False))
    c.text = ml_collections.ConfigDict(dict(
        width=0, depth=0, heads=0, mlp_dim=0, vocab_size=512, max_len=16))
    c.data = ml_collections.ConfigDict(dict(
        name="shapes", data_dir="", resolution=32, builder_config="r32", text_max_len=16,
        tokenizer="word", src="", folder_name="", tfds_name="", image_key="image",
        text_key="", label_key="", caption_template="a photo of a {label}",
        synthetic_examples=1024))   # data.name="synthetic": random records (throughput, tests)
    c.autoencoder = ml_collections.ConfigDict(dict(
        workdir="",          # a trained autoencoder; "" trains one into cache_dir when missing
        kind="kl", downsample=4, latent_channels=4, lfq_bits=10,
        fsq_levels=(8, 5, 5, 5),   # kind="fsq": levels per code channel
        factors=1,           # token paradigms: factors a token splits into (embeddings, heads)
        train_steps=0))      # > 0 overrides experiments/autoencoder.py's training length
    c.instruments = ml_collections.ConfigDict(dict(judge_steps=0, alignment_steps=0))
    c.cache_dir = "~/.cache/imgsynth"   # shared data/autoencoders for runlocal and grids

    c.optimizer = ml_collections.ConfigDict(dict(
        lr=3e-4, b1=0.9, b2=0.95, weight_decay=0.01, clip_norm=1.0, schedule="cosine",
        warmup_steps=100, min_lr_ratio=0.1, decay_fraction=0.2))
    c.ema_decay = 0.999
    c.cfg_dropout = 0.1          # caption dropout, for classifier-free guidance
    c.sampler = ml_collections.ConfigDict(dict(steps=0, guidance=2.0))
    c.mesh = (-1, 1, 1)
    c.log_every_steps = 50
    c.eval_every_steps = 500
    c.eval_examples = 512
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.peak_flops_per_s = 0.0     # 0: measure a large matmul at start

    c.runlocal = args.runlocal
    registry.apply_size(c, args.size)
    c.text.max_len = c.data.text_max_len
    registry.paradigm_module(c).configure(c)
    if args.budget:
        c.total_flops = args.budget
    elif args.steps:
        c.total_steps = args.steps
    else:
        c.total_steps = 10_000
    if args.runlocal:
        if "size=" not in (arg or ""):
            registry.apply_size(c, "T")
        c.global_batch_size = args.global_batch_size or 32
        if not (args.budget or args.steps):
            c.total_steps = 60
        c.data.builder_config = f"r{c.data.resolution}_small"
        c.optimizer.warmup_steps = 10
        c.optimizer.lr = 1e-3
        c.ema_decay = 0.99
        c.log_every_steps = 10
        c.eval_every_steps = 30
        c.eval_examples = 64
        c.checkpoint_every_steps = 30
    return c
