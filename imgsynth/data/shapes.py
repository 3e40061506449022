"""Captioned shapes: a procedurally generated text-to-image dataset as a TFDS builder.

Every record is drawn from its own random stream, seeded by (config seed, split, index), so a
build is byte-identical for the same seed and version however it is parallelised, and any record
can be regenerated alone (`render.make_record`). Records are ArrayRecord so grain reads them at
random.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os

import tensorflow_datasets as tfds

from imgsynth.data import records
from imgsynth.data.render import make_records

NAME = "captioned_shapes"
SPLITS = ("train", "validation", "test")
VERSION = "1.0.0"


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    """Resolution and split sizes of one build; `seed` fixes every record."""
    resolution: int = 32
    num_train: int = 100_000
    num_validation: int = 5_000
    num_test: int = 5_000
    seed: int = 0
    supersample: int = 4

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "validation": self.num_validation,
                "test": self.num_test}


def _configs() -> list[ShapesConfig]:
    configs = []
    for r in (16, 32, 64):
        configs += [
            ShapesConfig(name=f"r{r}", resolution=r,
                         description=f"{r}x{r} px; 100k train, 5k validation, 5k test."),
            ShapesConfig(name=f"r{r}_small", resolution=r, num_train=4_000, num_validation=1_000,
                         num_test=1_000, description=f"{r}x{r} px; 4k/1k/1k, for debug runs."),
            ShapesConfig(name=f"r{r}_tiny", resolution=r, num_train=256, num_validation=64,
                         num_test=64, description=f"{r}x{r} px; 256/64/64, for tests."),
        ]
    return configs


CONFIG_NAMES = tuple(c.name for c in _configs())


def default_workers() -> int:
    """One core is left to the main process, which encodes and writes every record."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, (cores or 1) - 1))


class CaptionedShapes(records.OfflineBuilder):
    """Images of 1–4 coloured shapes, with captions and the exact scene behind each."""

    name = NAME
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "First release."}
    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "r32"

    def __init__(self, *, num_workers: int | None = None, chunk_size: int = 1_000, **kwargs):
        """`num_workers` processes render `chunk_size` records per task (1: no processes)."""
        super().__init__(**kwargs)
        self._num_workers = default_workers() if num_workers is None else num_workers
        self._chunk_size = chunk_size

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Images of 1-4 coloured shapes on a grid, captions in six GenEval "
                        "categories, and the scene (shape, colour, size, row, col per object).",
            features=records.features(self.builder_config.resolution),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split)
                for split, n in self.builder_config.split_sizes().items() if n > 0}

    def _generate_examples(self, split: str):
        c = self.builder_config
        n = c.split_sizes()[split]
        step = self._chunk_size
        tasks = [(c.resolution, c.seed, SPLITS.index(split), s, min(s + step, n), c.supersample)
                 for s in range(0, n, step)]
        if self._num_workers <= 1 or len(tasks) == 1:
            for task in tasks:
                yield from make_records(task)
            return
        # 'spawn': workers need numpy and PIL only and must not inherit the threads of TensorFlow
        # or jax. As with any spawned pool, a calling script needs `if __name__ == "__main__":`.
        with multiprocessing.get_context("spawn").Pool(self._num_workers) as pool:
            for chunk in pool.imap(make_records, tasks):
                yield from chunk
