"""Training an instrument (the judge, the alignment model) through the one engine.

Instruments train on arrays held in memory, in a fixed batch order drawn from the seed, with AdamW
and a warm-up cosine schedule; `imgsynth.loop` gives them what every model of the suite gets —
checkpoints with the batch position, resume after a kill, metrics.jsonl (a row every 20 steps:
what the launcher's progress line reads) — in a run directory next to the cached instrument
(`<instrument dir>-training`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from collections.abc import Callable

import grain
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from imgsynth import config as config_lib, io, loop


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int = 1000
    per_step_examples: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    seed: int = 0


def batch_order(n: int, settings: Settings) -> list[np.ndarray]:
    """The sorted example indices of every step: a permutation per epoch, reshuffled when the
    next batch would run past its end."""
    b = settings.per_step_examples
    if n < b:
        raise ValueError(f"{n} training examples cannot fill a step of {b}")
    rng = np.random.default_rng(settings.seed)
    order, batches = rng.permutation(n), []
    for step in range(settings.steps):
        lo = (step * b) % n
        if lo + b > n:   # a new epoch: reshuffle
            order, lo = rng.permutation(n), 0
        batches.append(np.sort(order[lo:lo + b]))
    return batches


def train(name: str, run_dir: str, build: Callable[[], nnx.Module], loss: Callable,
          batch: Callable[[np.ndarray], dict], n: int, settings: Settings) -> nnx.Module:
    """Trains `build()` on `batch(indices)` for `settings.steps` steps; returns the model.

    `loss(model, batch) -> scalar`.
    """
    s = settings
    schedule = optax.warmup_cosine_decay_schedule(0.0, s.learning_rate, s.warmup_steps, s.steps)
    config = ml_collections.ConfigDict(dict(
        seed=s.seed, global_batch_size=s.per_step_examples, ema_decay=0.999,
        log_every_steps=20, checkpoint_every_steps=500, keep_checkpoints=1,
        settings=dataclasses.asdict(s)))
    order = batch_order(n, s)
    trained = []
    try:
        loop.check_config(run_dir, config)
        stale = io.read_status(run_dir)["status"] == "done"   # trained, never saved, or --force
    except config_lib.ConfigError:   # other settings: this is a new instrument
        stale = True
    if stale:
        shutil.rmtree(run_dir)

    def task_loss(model, b, rng):
        value = loss(model, b)
        return value, {"loss": value}

    def train_iter():
        return iter(grain.MapDataset.source(order).map(batch).to_iter_dataset())

    def finish(state, graphdef) -> dict:
        trained.append(nnx.merge(graphdef, jax.device_get(state["params"])))
        return {}

    row = loop.run(config, run_dir, loop.Task(
        name=name, build=build, loss=task_loss,
        train_iter=train_iter, total_steps=s.steps, finish=finish,
        optimizer=(optax.adamw(schedule, weight_decay=s.weight_decay), schedule)))
    if not trained:   # SIGTERM/SIGINT: the engine saved a checkpoint and stopped
        raise InterruptedError(f"{name} training stopped at step {row.get('step')}; run the same "
                               f"command again to resume from {run_dir}")
    return trained[0]


def cli(what: str, settings_cls, argv=None, extra=()) -> argparse.Namespace:
    """The command line both instruments share; `extra` = ((flag, argparse kwargs), ...)."""
    parser = argparse.ArgumentParser(description=f"Train the {what} of a shapes dataset once.")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--builder_config", default="r32")
    parser.add_argument("--steps", type=int, default=settings_cls.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help=f"retrain even if a {what} is cached")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args(argv)


def cached_or_trained(what: str, path: str, info_file: str, load: Callable,
                      train_fn: Callable[[], object], force: bool):
    """The instrument cached at `path`, or a newly trained one (always with `force`)."""
    if not force and os.path.isfile(os.path.join(path, info_file)):
        print(f"{what} already trained at {path}; --force retrains")
        return load(path)
    return train_fn()
