"""Reading a built dataset into host arrays for the metric models, and where their files live.

`Dataset` is any dataset a generator trains on — shapes, a captioned folder, a mapped TFDS
dataset — as the metric models see it: splits of images, captions, (shapes) categories and
scenes, and (labelled data) labels. The judge (shapes only), the alignment model and the label
classifier are trained once per dataset version and cached next to the dataset, so a result is
always tied to the exact data its instrument was calibrated on.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_data_source import ArrayRecordDataSource

from tensorflow_datasets.proto import tf_example_pb2

from imgsynth import cli, io
from imgsynth.data import build, folder, mapped, pipeline, records, shapes
from imgsynth.data import scene as scene_lib
from imgsynth.data.spec import DataSpec

# Part of every non-shapes instrument's cache name, so one trained to older rules is never
# reused. 2: the unreadable class and the readable head, learnt from destroyed images.
INSTRUMENT_REVISION = "v2"


def dataset_path(data_dir: str, builder_config: str) -> str:
    """The built shapes dataset's directory; a clear error with the build command if absent."""
    return Dataset.shapes(data_dir, builder_config).path()


def resolution_of(builder_config: str) -> int:
    if builder_config not in shapes.CONFIG_NAMES:
        raise ValueError(f"builder_config={builder_config!r} is not one of {shapes.CONFIG_NAMES}")
    return int(builder_config[1:].split("_")[0])


def cache_dir(data_dir: str, kind: str, builder_config: str, revision: str = "") -> str:
    """`<data_dir>/<kind>/<builder_config>-<version>-<fingerprint>[-<revision>]/`, e.g.
    judges/r32-1.0.0-3f9a…-v2: keyed by the dataset's content, so a metric model follows its data
    to a moved or copied data_dir and a rebuilt dataset never meets a model calibrated on the old
    one; and by the model's own `revision`, so a model trained to older rules is never reused."""
    digest = build.fingerprint(dataset_path(data_dir, builder_config))[:10]
    name = f"{builder_config}-{shapes.VERSION}-{digest}" + (f"-{revision}" if revision else "")
    return os.path.join(data_dir, kind, name)


def trained_dir(data_dir: str, kind: str, builder_config: str, *, info_file: str, what: str,
                revision: str = "") -> str:
    """The cache directory of a trained metric model; says how to make it when there is none."""
    return _existing(cache_dir(data_dir, kind, builder_config, revision), info_file,
                     f"no {what} for shapes {builder_config!r}")


def _existing(directory: str, info_file: str, what: str) -> str:
    if not os.path.isfile(os.path.join(directory, info_file)):
        raise cli.MissingStage(f"{what} at {directory}")
    return directory


@dataclasses.dataclass
class Split:
    """Records of one split as arrays: images uint8 [N, H, W, 3] (None if not read); labels are
    class names for labelled data, else None."""
    images: np.ndarray | None
    captions: list[str]
    categories: list[str]
    scenes: list[scene_lib.Scene]
    labels: list[str] | None = None


def read_split(data_dir: str, builder_config: str, split: str, limit: int | None = None,
               with_images: bool = True) -> Split:
    """The first `limit` records of a shapes `split` (all when None), in stored order."""
    return Dataset.shapes(data_dir, builder_config).read(split, limit, with_images)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset as the metric models read it, from a run's `config.data`."""
    spec: DataSpec

    @classmethod
    def of(cls, config_data) -> Dataset:
        return config_data if isinstance(config_data, Dataset) else cls(DataSpec.of(config_data))

    @classmethod
    def shapes(cls, data_dir: str, builder_config: str) -> Dataset:
        return cls.of({"name": "shapes", "data_dir": data_dir, "builder_config": builder_config,
                       "resolution": resolution_of(builder_config)})

    @property
    def name(self) -> str:
        """How reports name the dataset."""
        s = self.spec
        if s.name == "shapes":
            return f"shapes {s.shapes_config}"
        if s.name == "folder":
            return f"folder {s.folder_name} ({s.resolution} px)"
        return f"tfds {s.tfds_name} ({s.text_key or s.label_key}, {s.resolution} px)"

    @property
    def key(self) -> str:
        """The instrument cache's name for this dataset version."""
        s = self.spec
        if s.name == "shapes":
            return s.shapes_config
        if s.name == "folder":
            return f"{folder.config_name(s.folder_name, s.resolution)}-{folder.VERSION}"
        field = (s.text_key or s.label_key).replace("/", "_")
        return f"tfds-{s.tfds_name.replace('/', '_').replace(':', '_')}-{field}-r{s.resolution}"

    @property
    def resolution(self) -> int:
        return int(self.spec.resolution)

    @property
    def has_scenes(self) -> bool:
        return self.spec.name == "shapes"

    def path(self) -> str | None:
        """The built dataset's directory (None for a mapped TFDS dataset); says how to build it."""
        path = build.dataset_dir(self.spec)
        if path is not None and not build.is_complete(path):
            s = self.spec
            how = (f"--dataset=shapes --data_dir={s.data_dir} --config={s.shapes_config}"
                   if s.name == "shapes" else f"--dataset=folder --src=DIR --name={s.folder_name} "
                   f"--data_dir={s.data_dir} --resolution={s.resolution}")
            raise FileNotFoundError(f"{self.name} dataset is not built at {path}; build it with "
                                    f"`python -m imgsynth.data.build {how}`")
        return path

    def eval_split(self) -> str:
        """Where real test images and evaluation prompts come from: `test`, or (a TFDS source
        without one) `validation`."""
        if self.spec.name == "tfds":
            for split in ("test", "validation"):
                try:
                    mapped.raw_source(self.spec, split)
                    return split
                except FileNotFoundError:
                    continue
            raise ValueError(f"{self.name} has neither a test nor a validation split to "
                             "evaluate on")
        have = tfds.builder_from_directory(self.path()).info.splits
        if "test" not in have:
            raise ValueError(f"{self.name} has splits {sorted(have)} and no test split; rebuild "
                             "it with one (folder: --test_fraction)")
        return "test"

    def label_names(self) -> list[str] | None:
        """The class names of a labelled dataset, None for unlabelled data."""
        if self.spec.name == "folder":
            return (io.read_json(os.path.join(self.path(), build.SUMMARY_FILE)) or {}).get("labels")
        if self.spec.name == "tfds" and self.spec.label_key:
            return mapped.label_names(self.spec) or None
        return None

    def tokenizer(self):
        """The dataset's word tokenizer (what the alignment model reads captions with)."""
        return pipeline.load_tokenizer(dataclasses.replace(self.spec, tokenizer="word"))

    def instrument_dir(self, kind: str) -> str:
        """Where a metric model of this dataset is cached (shapes: `cache_dir`)."""
        if self.spec.name == "shapes":
            return cache_dir(self.spec.data_dir, kind, self.spec.shapes_config)
        root = self.spec.data_dir or os.fspath(tfds.core.constants.DATA_DIR)
        return os.path.join(root, kind, f"{self.key}-{INSTRUMENT_REVISION}")

    def trained_dir(self, kind: str, *, info_file: str, what: str) -> str:
        """The cache directory of a trained metric model; says how to make it when there is none."""
        if self.spec.name == "shapes":
            return trained_dir(self.spec.data_dir, kind, self.spec.shapes_config,
                               info_file=info_file, what=what)
        return _existing(self.instrument_dir(kind), info_file, f"no {what} for {self.name}")

    def read(self, split: str, limit: int | None = None, with_images: bool = True) -> Split:
        """The first `limit` records of `split` (all when None), in stored order."""
        if self.spec.name == "tfds":
            return self._read_tfds(split, limit)
        info = tfds.builder_from_directory(self.path()).info
        if split not in info.splits:
            raise ValueError(f"{self.name} has splits {list(info.splits)}, not {split!r}")
        source = ArrayRecordDataSource([os.fspath(p) for p in info.splits[split].filepaths])
        n = len(source) if limit is None else min(int(limit), len(source))
        labelled = self.label_names() is not None
        images, captions, categories, scenes, labels = [], [], [], [], []
        for start in range(0, n, 1000):
            for raw in source.__getitems__(list(range(start, min(start + 1000, n)))):
                r = records.decode_record(raw, with_images)
                if with_images:
                    images.append(r["image"])
                captions.append(r["caption"].decode())
                categories.append(scene_lib.CATEGORIES[int(r["category"])])
                scenes.append(scene_lib.Scene.from_record(r["objects"]))
                if labelled:
                    feature = tf_example_pb2.Example.FromString(raw).features.feature
                    labels.append(feature["label"].bytes_list.value[0].decode())
        return Split(np.stack(images) if with_images and images else None, captions, categories,
                     scenes, labels if labelled else None)

    def _read_tfds(self, split: str, limit: int | None) -> Split:
        names = self.label_names()
        mapper = mapped.RecordMapper(self.spec, names)
        source = mapped.raw_source(self.spec, split)
        n = len(source) if limit is None else min(int(limit), len(source))
        images, captions, labels = [], [], []
        for i in range(n):
            raw = source[i]
            r = mapper(raw)
            images.append(r["image"])
            captions.append(r["caption"])
            if names is not None:
                labels.append(mapper.label(raw))
        return Split(np.stack(images) if images else None, captions, ["none"] * n,
                     [scene_lib.Scene()] * n, labels if names is not None else None)


def step_examples(requested: int, n: int, what: str) -> int:
    """Examples per step of an instrument trained on `n` examples: `requested`, or fewer for a
    small dataset, always a multiple of the device count (the engine shards the batch)."""
    devices = jax.device_count()
    step = min(int(requested), n) // devices * devices
    if step < 1:
        raise ValueError(f"{what}: {n} training examples cannot fill a step on {devices} devices")
    return step


def negatives_per_step(step: int, share: float) -> int:
    """Destroyed images added to an instrument's step of `step` real ones: about `share` of it,
    at least one per device and a multiple of the device count (the engine shards them too)."""
    devices = jax.device_count()
    return max(devices, round(share * step) // devices * devices)


def as_dataset(data, builder_config: str = "r32") -> Dataset:
    """A Dataset, or a shapes (data_dir, builder_config) pair as one (the shapes CLIs' form)."""
    return data if isinstance(data, Dataset) else Dataset.shapes(data, builder_config)


def cpu_seconds() -> float:
    """User + system CPU time of this process: on a shared machine, wall time overstates what an
    idle one needs, CPU time does not."""
    t = os.times()
    return t.user + t.system

