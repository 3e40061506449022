"""Any prepared TFDS dataset with an image and a caption or class label, in the suite's layout.

The dataset must already be prepared in ArrayRecord format in `data_dir` (nothing downloads at
run time). Records are mapped lazily: image → uint8 RGB at the configured resolution (short side
resized, centre crop, grayscale repeated to RGB); caption from `text_key` (the first one when the
field holds several, e.g. COCO's five) or `caption_template` filled with the class name of
`label_key` (underscores read as spaces); category 'none'; no scene.
"""
from __future__ import annotations

import grain
import numpy as np
import tensorflow_datasets as tfds

from imgsynth import cli
from imgsynth.data import records
from imgsynth.data.spec import DataSpec


def _field(record, key: str):
    value = record
    for part in key.split("/"):
        if not hasattr(value, "keys") or part not in value:
            have = list(value.keys()) if hasattr(value, "keys") else type(value).__name__
            raise KeyError(f"record has no field {key!r} (at {part!r}; available: {have})")
        value = value[part]
    return value


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.ndim > 0 or isinstance(value, (list, tuple)):
        if len(value) == 0:
            return ""
        value = value[0]
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RecordMapper:
    """One record of the source dataset → {image, caption, category, objects}."""

    def __init__(self, spec: DataSpec, label_names: list[str] | None = None):
        self.spec = spec
        self.label_names = label_names

    def caption(self, record) -> str:
        if self.spec.text_key:
            return _text(_field(record, self.spec.text_key))
        return self.label_caption(int(_field(record, self.spec.label_key)))

    def label(self, record) -> str:
        """The record's class name (its id as text when the field is no ClassLabel)."""
        value = int(_field(record, self.spec.label_key))
        return self.label_names[value] if self.label_names else str(value)

    def label_caption(self, label: int) -> str:
        name = self.label_names[label] if self.label_names else str(label)
        return self.spec.caption_template.format(label=name.replace("_", " "))

    def __call__(self, record) -> dict:
        image = records.fit_image(np.asarray(_field(record, self.spec.image_key)),
                                  self.spec.resolution)
        return {"image": image, "caption": self.caption(record),
                "category": records.NONE_CATEGORY, "objects": records.empty_objects()}


def builder(spec: DataSpec) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(spec.tfds_name, data_dir=spec.data_dir or None)
    except ImportError as e:   # some of TFDS's own builders (coco_captions) import TensorFlow
        if "No module named 'tensorflow'" not in str(e):
            raise
        raise cli.UsageError(
            f"TFDS's {spec.tfds_name!r} builder imports TensorFlow, which the base install leaves "
            f"out: `pip install -e \".[tf]\"`") from e


def label_names(spec: DataSpec) -> list[str] | None:
    """Class names of `label_key`, or None when it is not a ClassLabel."""
    feature = builder(spec).info.features
    for part in spec.label_key.split("/"):
        feature = feature[part]
    return list(feature.names) if isinstance(feature, tfds.features.ClassLabel) else None


def raw_source(spec: DataSpec, split: str):
    dataset = builder(spec)
    try:
        return dataset.as_data_source(split)
    except Exception as e:  # TFDS raises several types for "not prepared as ArrayRecord"
        raise FileNotFoundError(
            f"TFDS dataset {spec.tfds_name!r} split {split!r} is not available for random access "
            f"in data_dir={spec.data_dir or '(TFDS default)'}: prepare it in ArrayRecord format "
            f"where it can be downloaded (TFDS's preparation needs TensorFlow: "
            f"`pip install -e \".[tf]\"`, then `tfds build {spec.tfds_name} "
            f"--file_format=array_record`, or `tfds convert_format` for a TFRecord copy) and "
            f"copy it there. ({e})") from e


def source(spec: DataSpec, split: str) -> grain.MapDataset:
    """A random-access dataset of mapped records."""
    names = label_names(spec) if spec.label_key else None
    return grain.MapDataset.source(raw_source(spec, split)).map(RecordMapper(spec, names))


def captions(spec: DataSpec, split: str = "train") -> list[str]:
    """Every caption of a split, for building a word vocabulary. With a label key these are the
    template over all class names (no need to read the data)."""
    if spec.label_key:
        names = label_names(spec)
        if names is None:
            raise ValueError(f"{spec.label_key!r} is not a ClassLabel: use text_key instead")
        mapper = RecordMapper(spec, names)
        return [mapper.label_caption(i) for i in range(len(names))]
    # Images are decoded too (a one-time cost): TFDS's test mocks cannot skip them.
    src = raw_source(spec, split)
    mapper = RecordMapper(spec)
    return [mapper.caption(src[i]) for i in range(len(src))]
