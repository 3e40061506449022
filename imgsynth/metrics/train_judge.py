"""Train the judge of a shapes dataset once, measure its ceiling, cache both next to the dataset.

    python -m imgsynth.metrics.train_judge --data_dir=DIR [--builder_config=r32] [--force]

The ceiling is the judge's prompt-following accuracy on the real test images: the share of test
records whose read-back scene satisfies the record's own caption, overall and per category. It
is the most any generator can score, and is stored in judge.json and always reported with the
metric. The run fails (exit 1) when it falls below --min_ceiling, after saving, so a weak
instrument is never used unnoticed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth.data import shapes
from imgsynth.metrics import _data, frechet
from imgsynth.metrics.judge import (INFO_FILE, Judge, JudgeConfig, JudgeNet, encode_scenes,
                                    judge_dir, load_judge_from, scene_accuracy, split_logits)
from imgsynth.metrics.prompt_following import prompt_following

MIN_CEILING = 0.99
FD_FLOOR_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Defaults reach a ceiling >= 0.99 on r32 within ~10 minutes on 2 CPU cores."""
    steps: int = 1500
    per_step_examples: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    seed: int = 0


def _loss(model: JudgeNet, images, cls, color, size):
    logits, _ = model(images)
    l_cls, l_color, l_size = split_logits(logits)
    occupied = (cls > 0).astype(jnp.float32)
    n_occupied = jnp.maximum(occupied.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels
    loss_cls = ce(l_cls, cls).mean()
    loss_color = (ce(l_color, jnp.maximum(color, 0)) * occupied).sum() / n_occupied
    loss_size = (ce(l_size, jnp.maximum(size, 0)) * occupied).sum() / n_occupied
    return loss_cls + loss_color + loss_size


@nnx.jit(donate_argnums=(0, 1))
def _train_step(model, optimizer, images, cls, color, size):
    loss, grads = nnx.value_and_grad(_loss)(model, images, cls, color, size)
    optimizer.update(model, grads)
    return loss


def evaluate(judge: Judge, test: _data.Split, validation: _data.Split | None = None) -> dict:
    """Ceiling (prompt following on real images), per category, exact scene accuracy, and the FD
    between real test and real validation images (the floor a generator's FD is read against)."""
    scenes = judge.read_scenes(test.images)
    result = prompt_following(scenes, test.captions, test.categories)
    out = {"ceiling": result["accuracy"], "ceiling_per_category": result["per_category"],
           "scene_accuracy": scene_accuracy(scenes, test.scenes), "num_test": len(scenes)}
    if validation is not None:
        n = min(len(test.captions), len(validation.captions))
        out["fd_real_floor"] = {"num": n, "value": frechet.fd(judge.features(test.images[:n]),
                                                              judge.features(validation.images[:n]))}
    return out


def train_judge(data_dir: str, builder_config: str = "r32", *, config: JudgeConfig | None = None,
                settings: TrainSettings = TrainSettings(), test_limit: int | None = None,
                save: bool = True, log=print) -> Judge:
    """Trains, measures the ceiling on the test split, and (if `save`) caches the judge."""
    start, cpu_start = time.perf_counter(), _data.cpu_seconds()
    resolution = _data.resolution_of(builder_config)
    config = config or JudgeConfig(resolution=resolution)
    if config.resolution != resolution:
        raise ValueError(f"judge resolution {config.resolution} != dataset resolution {resolution}")
    s = settings
    train = _data.read_split(data_dir, builder_config, "train", limit=s.steps * s.per_step_examples)
    targets = encode_scenes(train.scenes)
    log(f"judge: {len(train.captions)} training images read in {time.perf_counter() - start:.0f} s")

    model = JudgeNet(config, rngs=nnx.Rngs(s.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, s.learning_rate, s.warmup_steps, s.steps)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=s.weight_decay), wrt=nnx.Param)
    rng = np.random.default_rng(s.seed)
    n = len(train.captions)
    order = rng.permutation(n)
    train_start = time.perf_counter()
    for step in range(s.steps):
        lo = (step * s.per_step_examples) % n
        if lo + s.per_step_examples > n:  # a new epoch: reshuffle
            order, lo = rng.permutation(n), 0
        idx = np.sort(order[lo:lo + s.per_step_examples])
        loss = _train_step(model, optimizer, jnp.asarray(train.images[idx]),
                           *(jnp.asarray(targets[k][idx]) for k in ("cls", "color", "size")))
        if step % 500 == 0 or step == s.steps - 1:
            log(f"judge: step {step:5d}  train/loss {float(loss):.4f}  "
                f"{(time.perf_counter() - train_start) / 60:.1f} min")
    judge = Judge(model)
    test = _data.read_split(data_dir, builder_config, "test", limit=test_limit)
    validation = _data.read_split(data_dir, builder_config, "validation", limit=FD_FLOOR_SAMPLES)
    measured = evaluate(judge, test, validation)
    train_minutes = (time.perf_counter() - start) / 60
    judge.info = {
        "dataset": shapes.NAME, "builder_config": builder_config, "version": shapes.VERSION,
        **measured, "train_minutes": round(train_minutes, 2),
        "train_cpu_minutes": round((_data.cpu_seconds() - cpu_start) / 60, 2),
        "train_settings": dataclasses.asdict(s), "devices": str(jax.devices()[0].platform),
    }
    log(f"judge: ceiling {judge.ceiling:.4f} on {judge.info['num_test']} test images; per category "
        f"{json.dumps(judge.info['ceiling_per_category'])}; scene accuracy "
        f"{judge.info['scene_accuracy']:.4f}; {train_minutes:.1f} min")
    if save:
        judge.save(judge_dir(data_dir, builder_config))
    return judge


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--builder_config", default="r32")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_ceiling", type=float, default=MIN_CEILING)
    parser.add_argument("--force", action="store_true", help="retrain even if a judge is cached")
    args = parser.parse_args(argv)
    directory = judge_dir(args.data_dir, args.builder_config)
    if not args.force and os.path.isfile(os.path.join(directory, INFO_FILE)):
        judge = load_judge_from(directory)
        print(f"judge already trained at {directory} (ceiling {judge.ceiling}); --force retrains")
    else:
        judge = train_judge(args.data_dir, args.builder_config,
                            settings=TrainSettings(steps=args.steps, seed=args.seed))
    print(json.dumps({k: judge.info[k] for k in ("ceiling", "ceiling_per_category", "scene_accuracy",
                                                  "train_minutes") if k in judge.info}))
    if judge.ceiling < args.min_ceiling:
        print(f"judge ceiling {judge.ceiling:.4f} is below {args.min_ceiling}: train longer "
              f"(--steps) before trusting prompt-following numbers", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
