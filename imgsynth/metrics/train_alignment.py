"""Train the alignment model of a shapes dataset once, measure its retrieval accuracy, cache both.

    python -m imgsynth.metrics.train_alignment --data_dir=DIR [--builder_config=r32] [--force]

Retrieval accuracy on real held-out pairs (`alignment.retrieval_protocol`, groups of 100; a test
split smaller than that is one group) is stored in alignment.json and reported next to every
alignment score.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth.data import shapes
from imgsynth.data.tokenizer import WordTokenizer
from imgsynth.data.tokenizer import load as load_tokenizer_file
from imgsynth.metrics import _data
from imgsynth.metrics.alignment import (INFO_FILE, RETRIEVAL_GROUP, Alignment, AlignmentConfig,
                                        AlignmentNet, alignment_dir, alignment_scores,
                                        load_alignment_from, retrieval_accuracy,
                                        retrieval_protocol)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000
    per_step_examples: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    seed: int = 0


def _loss(model: AlignmentNet, images, ids, mask, same_caption):
    img, txt = model.embed(images, ids, mask)
    logits = jnp.exp(jnp.minimum(model.logit_scale[...], np.log(100.0))) * img @ txt.T
    targets = same_caption / same_caption.sum(axis=1, keepdims=True)  # duplicates are positives
    return 0.5 * (optax.softmax_cross_entropy(logits, targets).mean()
                  + optax.softmax_cross_entropy(logits.T, targets).mean())


@nnx.jit(donate_argnums=(0, 1))
def _train_step(model, optimizer, images, ids, mask, same_caption):
    loss, grads = nnx.value_and_grad(_loss)(model, images, ids, mask, same_caption)
    optimizer.update(model, grads)
    return loss


def train_alignment(data_dir: str, builder_config: str = "r32", *,
                    config: AlignmentConfig | None = None, settings: TrainSettings = TrainSettings(),
                    test_limit: int | None = None, save: bool = True, log=print) -> Alignment:
    """Trains on the train split, measures retrieval on the test split, caches (if `save`).

    `config` sets the architecture; its resolution, vocabulary size and caption length are
    always taken from the dataset."""
    start, cpu_start = time.perf_counter(), _data.cpu_seconds()
    resolution = _data.resolution_of(builder_config)
    dataset = _data.dataset_path(data_dir, builder_config)
    tokenizer = load_tokenizer_file(os.path.join(dataset, "vocab.json"))
    if not isinstance(tokenizer, WordTokenizer):
        raise ValueError(f"{dataset}/vocab.json is not a word vocabulary")
    config = dataclasses.replace(config or AlignmentConfig(), resolution=resolution,
                                 vocab_size=tokenizer.vocab_size, text_max_len=tokenizer.max_len)
    s = settings
    train = _data.read_split(data_dir, builder_config, "train", limit=s.steps * s.per_step_examples)
    ids, mask = tokenizer.encode(train.captions)
    caption_ids = np.unique(np.asarray(train.captions), return_inverse=True)[1]
    log(f"alignment: {len(ids)} training pairs read in {time.perf_counter() - start:.0f} s")

    model = AlignmentNet(config, rngs=nnx.Rngs(s.seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, s.learning_rate, s.warmup_steps, s.steps)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=s.weight_decay), wrt=nnx.Param)
    rng = np.random.default_rng(s.seed)
    n, b = len(ids), s.per_step_examples
    if n < b:
        raise ValueError(f"{n} training pairs cannot fill a step of {b}")
    order = rng.permutation(n)
    for step in range(s.steps):
        lo = (step * b) % n
        if lo + b > n:
            order, lo = rng.permutation(n), 0
        idx = np.sort(order[lo:lo + b])
        same = (caption_ids[idx][:, None] == caption_ids[idx][None, :]).astype(np.float32)
        loss = _train_step(model, optimizer, jnp.asarray(train.images[idx]), jnp.asarray(ids[idx]),
                           jnp.asarray(mask[idx]), jnp.asarray(same))
        if step % 500 == 0 or step == s.steps - 1:
            log(f"alignment: step {step:5d}  train/loss {float(loss):.4f}  "
                f"{(time.perf_counter() - start) / 60:.1f} min")
    result = Alignment(model, tokenizer)
    test = _data.read_split(data_dir, builder_config, "test", limit=test_limit)
    scores = alignment_scores(result, test.images, test.captions)
    shuffled = alignment_scores(result, test.images, np.roll(np.asarray(test.captions), 1).tolist())
    group = min(RETRIEVAL_GROUP, len(test.captions))
    accuracy = retrieval_accuracy(result, test.images, test.captions, group)
    train_minutes = (time.perf_counter() - start) / 60
    result.info = {
        "dataset": shapes.NAME, "builder_config": builder_config, "version": shapes.VERSION,
        "retrieval_accuracy": accuracy,
        "retrieval_protocol": retrieval_protocol(group), "retrieval_group": group,
        "real_score": float(scores.mean()), "mismatched_score": float(shuffled.mean()),
        "num_test": len(test.captions), "train_minutes": round(train_minutes, 2),
        "train_cpu_minutes": round((_data.cpu_seconds() - cpu_start) / 60, 2),
        "train_settings": dataclasses.asdict(s), "devices": str(jax.devices()[0].platform),
    }
    log(f"alignment: retrieval accuracy {result.retrieval_accuracy:.4f}; score on real pairs "
        f"{result.info['real_score']:.1f}, on mismatched pairs {result.info['mismatched_score']:.1f}; "
        f"{train_minutes:.1f} min")
    if save:
        result.save(alignment_dir(data_dir, builder_config))
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--builder_config", default="r32")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if a model is cached")
    args = parser.parse_args(argv)
    directory = alignment_dir(args.data_dir, args.builder_config)
    if not args.force and os.path.isfile(os.path.join(directory, INFO_FILE)):
        result = load_alignment_from(directory)
        print(f"alignment model already trained at {directory}; --force retrains")
    else:
        result = train_alignment(args.data_dir, args.builder_config,
                                 settings=TrainSettings(steps=args.steps, seed=args.seed))
    print(json.dumps({k: result.info[k] for k in ("retrieval_accuracy", "real_score",
                                                   "mismatched_score", "train_minutes")}))


if __name__ == "__main__":
    main()
