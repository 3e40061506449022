"""Label following: a small classifier trained on a labelled dataset reads each generated image.

For data with a class per image (a TFDS label field, or `label` in a folder's captions.jsonl),
label following is the share of samples the classifier assigns the class of their prompt's
record. The classifier is the alignment model's image tower with a class head, trained with
cross-entropy through the one engine (`train_labels.py`); its accuracy on the real evaluation
split is the ceiling a perfect generator could reach, stored with it and reported next to every
score. A classifier that must name a class for every image credits garbage: trained by the
stages, it has one more class, *unreadable*, learnt (as the judge's) from real images destroyed
beyond reading (`corruptions.training_negatives`); an image read as unreadable follows no label,
so colour noise, blur or shuffled patches score at or below chance (1 / classes). Trained once
per dataset version by the run's stages and cached at `<data_dir>/labels/<dataset key>/`.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import weights as weights_lib
from imgsynth.metrics import _data
from imgsynth.metrics.alignment import AlignmentConfig, ImageTower, _batched

INFO_FILE = "labels.json"
KIND = "labels"


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    resolution: int = 32
    num_classes: int = 2
    widths: tuple[int, ...] = (32, 64)
    width: int = 128
    unreadable: bool = False   # one more output: the image carries no readable class


class LabelNet(nnx.Module):
    def __init__(self, cfg: LabelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.tower = ImageTower(AlignmentConfig(resolution=cfg.resolution, widths=cfg.widths,
                                                width=cfg.width,
                                                embed_dim=cfg.num_classes + cfg.unreadable),
                                rngs=rngs)

    def __call__(self, images_BHWC):
        return self.tower(images_BHWC)


@nnx.jit
def _predict(model: LabelNet, images):
    return jnp.argmax(model(images), axis=-1)


class LabelClassifier:
    """A trained classifier, its class names and its measured accuracy (`info`)."""

    def __init__(self, model: LabelNet, info: dict, batch_size: int = 256):
        self.model, self.info, self.batch_size = model, dict(info), batch_size

    @property
    def names(self) -> list[str]:
        return list(self.info["label_names"])

    @property
    def accuracy(self) -> float | None:
        """Accuracy on the real evaluation split: label following's ceiling."""
        return self.info.get("test_accuracy")

    def predict(self, images) -> list[str | None]:
        """Each image's class name, or None where it is read as unreadable."""
        ids = _batched(lambda x: _predict(self.model, x), [np.asarray(images)], self.batch_size)
        names = self.names + [None]   # the unreadable class, where the model has it
        return [names[int(i)] for i in ids]

    def unreadable(self, images) -> np.ndarray:
        """[N] bool: read as carrying no class (always False for a model without that class)."""
        return np.array([p is None for p in self.predict(images)])

    def correct(self, images, labels) -> np.ndarray:
        """Per image, whether it is classified as its label (what intervals resample)."""
        if len(images) != len(labels) or not len(labels):
            raise ValueError(f"{len(images)} images and {len(labels)} labels: one label per image")
        return np.array([p == t for p, t in zip(self.predict(images), labels)], float)

    def following(self, images, labels) -> float:
        """Share of `images` classified as their `labels`."""
        return float(np.mean(self.correct(images, labels)))


def load_labels_from(directory: str) -> LabelClassifier:
    model, info = weights_lib.load_model(directory, INFO_FILE, LabelConfig, LabelNet,
                                      what="label classifier")
    return LabelClassifier(model, info)


def load_labels(dataset: _data.Dataset) -> LabelClassifier:
    return load_labels_from(dataset.trained_dir(KIND, info_file=INFO_FILE,
                                                what="label classifier"))
