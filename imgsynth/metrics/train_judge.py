"""Train the judge of a shapes dataset once, measure its ceiling, cache both next to the dataset.

    python -m imgsynth.metrics.train_judge --data_dir=DIR [--builder_config=r32] [--force]

The ceiling is the judge's prompt-following accuracy on the real test images: the share of test
records whose read-back scene satisfies the record's own caption, overall and per category. It
is the most any generator can score, and is stored in judge.json and always reported with the
metric. Next to it: the false-positive rate, the same accuracy on the test images destroyed
(`corruptions.CORRUPTIONS`), which no generator should be credited for. Every step trains on
real images and on destroyed ones, which must read as unreadable (`_loss`). The run fails
(exit 1) when the ceiling falls below --min_ceiling or the false-positive rate rises above
--max_false_positive, after saving, so a weak instrument is never used unnoticed.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth.data import shapes
from imgsynth.metrics import _data, corruptions, frechet, instrument_training
from imgsynth.metrics.judge import (CELLS, INFO_FILE, UNREADABLE, Judge, JudgeConfig, JudgeNet,
                                    encode_scenes, judge_dir, load_judge_from, log_readable,
                                    scene_accuracy, split_logits)
from imgsynth.metrics.prompt_following import false_positive_rates, prompt_following

MIN_CEILING = 0.99
MAX_FALSE_POSITIVE = 0.02
FD_FLOOR_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class TrainSettings(instrument_training.Settings):
    """Defaults reach a ceiling >= 0.99 and false positives <= 0.02 on r32 in ~16 CPU-minutes."""
    steps: int = 2000
    per_step_examples: int = 128
    learning_rate: float = 2e-3
    negatives_per_step: int = 16   # destroyed images added to each step (`with_negatives`)


def _loss(model: JudgeNet, batch):
    """Per-cell cross-entropy on real images; on destroyed ones (every cell labelled
    UNREADABLE), −log P(some cell is unreadable), so no cell of them is forced either way."""
    logits, _ = model(batch["images"])
    cls, color, size = batch["cls"], batch["color"], batch["size"]
    l_cls, l_color, l_size = split_logits(logits)
    destroyed = (cls == UNREADABLE).all(-1).astype(jnp.float32)
    real = 1.0 - destroyed
    occupied = ((cls > 0) & (cls < UNREADABLE)).astype(jnp.float32)
    n_occupied = jnp.maximum(occupied.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels
    loss_cls = (ce(l_cls, cls).mean(-1) * real).sum() / jnp.maximum(real.sum(), 1.0)
    log_unreadable = jnp.log(-jnp.expm1(jnp.minimum(log_readable(l_cls), -1e-7)))
    loss_destroyed = -(log_unreadable * destroyed).sum() / jnp.maximum(destroyed.sum(), 1.0)
    loss_color = (ce(l_color, jnp.maximum(color, 0)) * occupied).sum() / n_occupied
    loss_size = (ce(l_size, jnp.maximum(size, 0)) * occupied).sum() / n_occupied
    return loss_cls + loss_destroyed + loss_color + loss_size


def with_negatives(batch: dict, negatives: int, seed) -> dict:
    """`batch` with its first `negatives` images destroyed (`corruptions.training_negatives`,
    drawn from `seed`) appended, every cell of them labelled UNREADABLE (the image as a whole:
    `_loss`)."""
    if not negatives:
        return batch
    images = corruptions.training_negatives(batch["images"][:negatives],
                                            np.random.default_rng(seed))
    n = len(images)
    return {"images": np.concatenate([batch["images"], images]),
            "cls": np.concatenate([batch["cls"], np.full((n, CELLS), UNREADABLE, np.int32)]),
            **{k: np.concatenate([batch[k], np.full((n, CELLS), -1, np.int32)])
               for k in ("color", "size")}}


def evaluate(judge: Judge, test: _data.Split, validation: _data.Split | None = None) -> dict:
    """Ceiling (prompt following on real images), per category, exact scene accuracy, the share
    of real images read as unreadable, the false-positive rates on destroyed test images, and the
    FD between real test and real validation images (the floor a generator's FD is read
    against)."""
    scenes, unreadable = judge.read(test.images)
    result = prompt_following(scenes, test.captions, test.categories)
    out = {"ceiling": result["accuracy"], "ceiling_per_category": result["per_category"],
           "scene_accuracy": scene_accuracy(scenes, test.scenes),
           "unreadable_real": float(unreadable.mean()), "num_test": len(scenes),
           **false_positive_rates(judge, test, corruptions.destroyed(test.images))}
    if validation is not None:
        n = min(len(test.captions), len(validation.captions))
        out["fd_real_floor"] = {"num": n, "value": frechet.fd(judge.features(test.images[:n]),
                                                              judge.features(validation.images[:n]))}
    return out


def train_judge(data_dir: str, builder_config: str = "r32", *, config: JudgeConfig | None = None,
                settings: TrainSettings = TrainSettings(), log=print) -> Judge:
    """Trains, measures the ceiling on the test split, and caches the judge."""
    start, cpu_start = time.perf_counter(), _data.cpu_seconds()
    resolution = _data.resolution_of(builder_config)
    config = config or JudgeConfig(resolution=resolution)
    if config.resolution != resolution:
        raise ValueError(f"judge resolution {config.resolution} != dataset resolution {resolution}")
    s = settings
    train = _data.read_split(data_dir, builder_config, "train", limit=s.steps * s.per_step_examples)
    targets = encode_scenes(train.scenes)
    log(f"judge: {len(train.captions)} training images read in {time.perf_counter() - start:.0f} s")
    directory = judge_dir(data_dir, builder_config)
    model = instrument_training.train(
        "judge", directory + "-training", lambda: JudgeNet(config, rngs=nnx.Rngs(s.seed)), _loss,
        lambda idx: with_negatives(
            {"images": train.images[idx], **{k: v[idx] for k, v in targets.items()}},
            s.negatives_per_step, [s.seed, *idx]),
        len(train.captions), s)
    judge = Judge(model)
    test = _data.read_split(data_dir, builder_config, "test")
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
        f"{judge.info['scene_accuracy']:.4f}; false positives on destroyed images "
        f"{json.dumps(judge.info['false_positive_per_corruption'])}; {train_minutes:.1f} min")
    judge.save(directory)
    return judge


def main(argv=None) -> None:
    args = instrument_training.cli("judge", TrainSettings, argv, [
        ("--min_ceiling", dict(type=float, default=MIN_CEILING,
                               help="exit 1 if the ceiling is lower")),
        ("--max_false_positive", dict(type=float, default=MAX_FALSE_POSITIVE,
                                      help="exit 1 if the false-positive rate is higher"))])
    judge = instrument_training.cached_or_trained(
        "judge", judge_dir(args.data_dir, args.builder_config), INFO_FILE, load_judge_from,
        lambda: train_judge(args.data_dir, args.builder_config,
                            settings=TrainSettings(steps=args.steps, seed=args.seed)), args.force)
    print(json.dumps({k: judge.info[k] for k in ("ceiling", "ceiling_per_category", "scene_accuracy",
                                                  "false_positive",
                                                  "false_positive_per_corruption",
                                                  "train_minutes") if k in judge.info}))
    weak = []
    if judge.ceiling < args.min_ceiling:
        weak.append(f"judge ceiling {judge.ceiling:.4f} is below {args.min_ceiling}")
    if judge.info["false_positive"] > args.max_false_positive:
        weak.append(f"judge false-positive rate {judge.info['false_positive']:.4f} is above "
                    f"{args.max_false_positive}")
    if weak:
        print("; ".join(weak) + ": train longer (--steps) before trusting prompt-following "
              "numbers", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
