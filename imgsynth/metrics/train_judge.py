"""Train the judge of a shapes dataset once, measure its ceiling, cache both next to the dataset.

    python -m imgsynth.metrics.train_judge --data_dir=DIR [--builder_config=r32] [--force]

The ceiling is the judge's prompt-following accuracy on the real test images: the share of test
records whose read-back scene satisfies the record's own caption, overall and per category. It
is the most any generator can score, and is stored in judge.json and always reported with the
metric. The run fails (exit 1) when it falls below --min_ceiling, after saving, so a weak
instrument is never used unnoticed.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from imgsynth.data import shapes
from imgsynth.metrics import _data, frechet, instrument_training
from imgsynth.metrics.judge import (INFO_FILE, Judge, JudgeConfig, JudgeNet, encode_scenes,
                                    judge_dir, load_judge_from, scene_accuracy, split_logits)
from imgsynth.metrics.prompt_following import prompt_following

MIN_CEILING = 0.99
FD_FLOOR_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class TrainSettings(instrument_training.Settings):
    """Defaults reach a ceiling >= 0.99 on r32 within ~10 minutes on 2 CPU cores."""
    steps: int = 1500
    per_step_examples: int = 128
    learning_rate: float = 2e-3


def _loss(model: JudgeNet, batch):
    logits, _ = model(batch["images"])
    cls, color, size = batch["cls"], batch["color"], batch["size"]
    l_cls, l_color, l_size = split_logits(logits)
    occupied = (cls > 0).astype(jnp.float32)
    n_occupied = jnp.maximum(occupied.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels
    loss_cls = ce(l_cls, cls).mean()
    loss_color = (ce(l_color, jnp.maximum(color, 0)) * occupied).sum() / n_occupied
    loss_size = (ce(l_size, jnp.maximum(size, 0)) * occupied).sum() / n_occupied
    return loss_cls + loss_color + loss_size


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
        lambda idx: {"images": train.images[idx], **{k: v[idx] for k, v in targets.items()}},
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
        f"{judge.info['scene_accuracy']:.4f}; {train_minutes:.1f} min")
    judge.save(directory)
    return judge


def main(argv=None) -> None:
    args = instrument_training.cli("judge", TrainSettings, argv, [(
        "--min_ceiling", dict(type=float, default=MIN_CEILING,
                              help="exit 1 if the ceiling is lower"))])
    judge = instrument_training.cached_or_trained(
        "judge", judge_dir(args.data_dir, args.builder_config), INFO_FILE, load_judge_from,
        lambda: train_judge(args.data_dir, args.builder_config,
                            settings=TrainSettings(steps=args.steps, seed=args.seed)), args.force)
    print(json.dumps({k: judge.info[k] for k in ("ceiling", "ceiling_per_category", "scene_accuracy",
                                                  "train_minutes") if k in judge.info}))
    if judge.ceiling < args.min_ceiling:
        print(f"judge ceiling {judge.ceiling:.4f} is below {args.min_ceiling}: train longer "
              f"(--steps) before trusting prompt-following numbers", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
