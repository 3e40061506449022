"""Train the label classifier of a labelled dataset once (the run's stages call it), measure its
accuracy on the real evaluation split and what it credits in destroyed copies of those images,
cache both at `<data_dir>/labels/<dataset key>/`."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import optax
from flax import nnx

from imgsynth import weights as weights_lib
from imgsynth.metrics import _data, corruptions, instrument_training
from imgsynth.metrics.labels import INFO_FILE, KIND, LabelClassifier, LabelConfig, LabelNet

# Destroyed images added to each step, as a share of its real ones, labelled unreadable.
NEGATIVE_SHARE = 0.25


def train_labels(dataset: _data.Dataset, *,
                 settings: instrument_training.Settings = instrument_training.Settings(),
                 log=print) -> LabelClassifier:
    """Trains on the train split, measures accuracy on the evaluation split, caches."""
    start = time.perf_counter()
    names = dataset.label_names()
    if not names:
        raise ValueError(f"{dataset.name} has no labels to train a label classifier on")
    s = settings
    train = dataset.read("train", limit=s.steps * s.per_step_examples)
    s = dataclasses.replace(s, per_step_examples=_data.step_examples(
        s.per_step_examples, len(train.labels), f"{dataset.name} label classifier"))
    index = {n: i for i, n in enumerate(names)}
    targets = np.asarray([index[label] for label in train.labels], np.int32)
    config = LabelConfig(resolution=dataset.resolution, num_classes=len(names), unreadable=True)
    negatives = _data.negatives_per_step(s.per_step_examples, NEGATIVE_SHARE)

    def loss(model, batch):
        logits = model(batch["images"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    def batch(idx):
        """The step's images and labels, then destroyed copies of its first `negatives` images
        (drawn from the step's own seed, so a resumed run sees the same) as unreadable."""
        bad = corruptions.training_negatives(train.images[idx[:negatives]],
                                             np.random.default_rng([s.seed, *idx]))
        return {"images": np.concatenate([train.images[idx], bad]),
                "labels": np.concatenate([targets[idx], np.full(len(bad), len(names), np.int32)])}

    directory = dataset.instrument_dir(KIND)
    model = instrument_training.train(
        "labels", directory + "-training", lambda: LabelNet(config, rngs=nnx.Rngs(s.seed)), loss,
        batch, len(targets), s)
    split = dataset.eval_split()
    test = dataset.read(split)
    result = LabelClassifier(model, {"label_names": names})
    accuracy = result.following(test.images, test.labels)
    destroyed = corruptions.destroyed(test.images, s.seed)
    result.info.update({
        "dataset": dataset.name, "dataset_key": dataset.key, "test_accuracy": accuracy,
        "test_split": split, "num_test": len(test.labels), "chance": 1 / len(names),
        "unreadable_real": float(result.unreadable(test.images).mean()),
        "false_positive_per_corruption": {k: result.following(x, test.labels)
                                          for k, x in destroyed.items()},
        "train_minutes": round((time.perf_counter() - start) / 60, 2),
        "train_settings": dataclasses.asdict(s)})
    credited = result.info["false_positive_per_corruption"]
    log(f"labels: accuracy {accuracy:.3f} on {len(test.labels)} real {split} images "
        f"({len(names)} classes, chance {1 / len(names):.3f}; unreadable "
        f"{result.info['unreadable_real']:.3f}); on destroyed copies "
        + ", ".join(f"{k} {v:.3f}" for k, v in credited.items()))
    weights_lib.save_model(directory, model, INFO_FILE, result.info)
    return result
