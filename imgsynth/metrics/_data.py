"""Reading the shapes dataset into host arrays for the metric models, and where their files live.

The judge and the alignment model are trained once per dataset version and cached next to the
dataset, so a result is always tied to the exact data its instrument was calibrated on.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from array_record.python.array_record_data_source import ArrayRecordDataSource

from imgsynth.data import build, records, shapes
from imgsynth.data import scene as scene_lib


def dataset_path(data_dir: str, builder_config: str) -> str:
    """The built dataset's directory; a clear error with the build command if it is not there."""
    path = build.dataset_dir({"name": "shapes", "data_dir": data_dir,
                              "builder_config": builder_config,
                              "resolution": resolution_of(builder_config)})
    if not build.is_complete(path):
        raise FileNotFoundError(
            f"shapes dataset {builder_config!r} is not built at {path}; build it with "
            f"`python -m imgsynth.data.build --dataset=shapes --data_dir={data_dir} "
            f"--config={builder_config}`")
    return path


def resolution_of(builder_config: str) -> int:
    if builder_config not in shapes.CONFIG_NAMES:
        raise ValueError(f"builder_config={builder_config!r} is not one of {shapes.CONFIG_NAMES}")
    return int(builder_config[1:].split("_")[0])


def cache_dir(data_dir: str, kind: str, builder_config: str) -> str:
    """`<data_dir>/<kind>/<builder_config>-<version>-<fingerprint>/`, e.g. judges/r32-1.0.0-3f9a…:
    keyed by the dataset's content, so a metric model follows its data to a moved or copied
    data_dir and a rebuilt dataset never meets a model calibrated on the old one."""
    digest = build.fingerprint(dataset_path(data_dir, builder_config))[:10]
    return os.path.join(data_dir, kind, f"{builder_config}-{shapes.VERSION}-{digest}")


def trained_dir(data_dir: str, kind: str, builder_config: str, *, info_file: str, what: str,
                trainer: str) -> str:
    """The cache directory of a trained metric model; says how to train it when there is none."""
    directory = cache_dir(data_dir, kind, builder_config)
    if not os.path.isfile(os.path.join(directory, info_file)):
        raise FileNotFoundError(
            f"no {what} trained for shapes {builder_config!r} at {directory}; train it once with "
            f"`python -m imgsynth.metrics.{trainer} --data_dir={data_dir} "
            f"--builder_config={builder_config}`")
    return directory


@dataclasses.dataclass
class Split:
    """Records of one split as arrays: images uint8 [N, H, W, 3] (None if not read)."""
    images: np.ndarray | None
    captions: list[str]
    categories: list[str]
    scenes: list[scene_lib.Scene]


def read_split(data_dir: str, builder_config: str, split: str, limit: int | None = None,
               with_images: bool = True) -> Split:
    """The first `limit` records of `split` (all when None), in stored order (the order of
    `as_data_source(split)`)."""
    info = tfds.builder_from_directory(dataset_path(data_dir, builder_config)).info
    if split not in info.splits:
        raise ValueError(f"shapes {builder_config!r} has splits {list(info.splits)}, not {split!r}")
    source = ArrayRecordDataSource([os.fspath(p) for p in info.splits[split].filepaths])
    n = len(source) if limit is None else min(int(limit), len(source))
    images, captions, categories, scenes = [], [], [], []
    for start in range(0, n, 1000):
        for raw in source.__getitems__(list(range(start, min(start + 1000, n)))):
            r = records.decode_record(raw, with_images)
            if with_images:
                images.append(r["image"])
            captions.append(r["caption"].decode())
            categories.append(scene_lib.CATEGORIES[int(r["category"])])
            scenes.append(scene_lib.Scene.from_record(r["objects"]))
    return Split(np.stack(images) if with_images and images else None, captions, categories, scenes)


def cpu_seconds() -> float:
    """User + system CPU time of this process: on a shared machine, wall time overstates what an
    idle one needs, CPU time does not."""
    t = os.times()
    return t.user + t.system

