"""Train the alignment model of a dataset once, measure its retrieval accuracy, cache both.

    python -m imgsynth.metrics.train_alignment --data_dir=DIR [--builder_config=r32] [--force]

Retrieval accuracy on real held-out pairs (`alignment.retrieval_protocol`, groups of 100; a test
split smaller than that is one group) is stored in alignment.json and reported next to every
alignment score. Outside shapes (where the judge guards against garbage) the model also learns a
readable head from destroyed copies of each step's first images (`NEGATIVE_SHARE`), and its
rejection rates on real and destroyed test images are stored beside it.
"""
from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from imgsynth.data.tokenizer import WordTokenizer
from imgsynth.metrics import _data, corruptions, instrument_training
from imgsynth.metrics.alignment import (INFO_FILE, RETRIEVAL_GROUP, Alignment, AlignmentConfig,
                                        AlignmentNet, alignment_dir, alignment_scores,
                                        load_alignment_from, retrieval_accuracy,
                                        retrieval_protocol)


TrainSettings = instrument_training.Settings
# Destroyed images added to each step (models with the readable head), as a share of its pairs.
NEGATIVE_SHARE = 0.5


def _loss(model: AlignmentNet, batch):
    img, txt = model.embed(batch["images"], batch["ids"], batch["mask"])
    logits = jnp.exp(jnp.minimum(model.logit_scale[...], np.log(100.0))) * img @ txt.T
    same = batch["same"]
    targets = same / same.sum(axis=1, keepdims=True)  # duplicates are positives
    loss = 0.5 * (optax.softmax_cross_entropy(logits, targets).mean()
                  + optax.softmax_cross_entropy(logits.T, targets).mean())
    if "negatives" in batch:   # the readable head: real images 1, destroyed ones 0
        real, bad = (model.readable_logits(batch[k]) for k in ("images", "negatives"))
        loss += (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)).mean()
                 + optax.sigmoid_binary_cross_entropy(bad, jnp.zeros_like(bad)).mean())
    return loss


def train_alignment(data, builder_config: str = "r32", *,
                    config: AlignmentConfig | None = None, settings: TrainSettings = TrainSettings(),
                    log=print) -> Alignment:
    """Trains on the train split, measures retrieval on the evaluation split, caches.

    `data` is a `_data.Dataset` or a shapes data_dir (with `builder_config`). `config` sets the
    architecture; its resolution, vocabulary size and caption length are always taken from the
    dataset; a dataset smaller than a step trains on steps of all its pairs."""
    start, cpu_start = time.perf_counter(), _data.cpu_seconds()
    dataset = _data.as_dataset(data, builder_config)
    tokenizer = dataset.tokenizer()
    if not isinstance(tokenizer, WordTokenizer):
        raise ValueError(f"{dataset.name}: the alignment model needs a word vocabulary")
    config = dataclasses.replace(config or AlignmentConfig(), resolution=dataset.resolution,
                                 vocab_size=tokenizer.vocab_size, text_max_len=tokenizer.max_len,
                                 reject=dataset.spec.name != "shapes")
    s = settings
    train = dataset.read("train", limit=s.steps * s.per_step_examples)
    s = dataclasses.replace(s, per_step_examples=_data.step_examples(
        s.per_step_examples, len(train.captions), f"{dataset.name} alignment model"))
    ids, mask = tokenizer.encode(train.captions)
    caption_ids = np.unique(np.asarray(train.captions), return_inverse=True)[1]
    log(f"alignment: {len(ids)} training pairs read in {time.perf_counter() - start:.0f} s")

    negatives = (_data.negatives_per_step(s.per_step_examples, NEGATIVE_SHARE) if config.reject
                 else 0)

    def batch(idx):
        same = (caption_ids[idx][:, None] == caption_ids[idx][None, :]).astype(np.float32)
        out = {"images": train.images[idx], "ids": ids[idx], "mask": mask[idx], "same": same}
        if negatives:   # drawn from the step's own seed: a resumed run sees the same
            out["negatives"] = corruptions.training_negatives(
                train.images[idx[:negatives]], np.random.default_rng([s.seed, *idx]))
        return out

    directory = dataset.instrument_dir("alignment")
    model = instrument_training.train(
        "alignment", directory + "-training", lambda: AlignmentNet(config, rngs=nnx.Rngs(s.seed)),
        _loss, batch, len(ids), s)
    result = Alignment(model, tokenizer)
    test = dataset.read(dataset.eval_split())
    scores = alignment_scores(result, test.images, test.captions)
    shuffled = alignment_scores(result, test.images, np.roll(np.asarray(test.captions), 1).tolist())
    group = min(RETRIEVAL_GROUP, len(test.captions))
    accuracy = retrieval_accuracy(result, test.images, test.captions, group)
    train_minutes = (time.perf_counter() - start) / 60
    rejected = {"unreadable_real": float(1 - result.readable(test.images).mean()),
                "unreadable_per_corruption": {
                    k: float(1 - result.readable(x).mean())
                    for k, x in corruptions.destroyed(test.images, s.seed).items()}}
    result.info = {
        "dataset": dataset.name, "dataset_key": dataset.key,
        "retrieval_accuracy": accuracy,
        "retrieval_protocol": retrieval_protocol(group), "retrieval_group": group,
        "real_score": float(scores.mean()), "mismatched_score": float(shuffled.mean()),
        "num_test": len(test.captions), "train_minutes": round(train_minutes, 2),
        "train_cpu_minutes": round((_data.cpu_seconds() - cpu_start) / 60, 2),
        "train_settings": dataclasses.asdict(s), "devices": str(jax.devices()[0].platform),
        **(rejected if config.reject else {}),
    }
    log(f"alignment: retrieval accuracy {result.retrieval_accuracy:.4f}; score on real pairs "
        f"{result.info['real_score']:.1f}, on mismatched pairs {result.info['mismatched_score']:.1f}; "
        f"{train_minutes:.1f} min")
    result.save(directory)
    return result


def main(argv=None) -> None:
    args = instrument_training.cli("alignment model", TrainSettings, argv)
    result = instrument_training.cached_or_trained(
        "alignment model", alignment_dir(args.data_dir, args.builder_config), INFO_FILE,
        load_alignment_from,
        lambda: train_alignment(args.data_dir, args.builder_config,
                                settings=TrainSettings(steps=args.steps, seed=args.seed)), args.force)
    print(json.dumps({k: result.info[k] for k in ("retrieval_accuracy", "real_score",
                                                   "mismatched_score", "train_minutes")}))


if __name__ == "__main__":
    main()
