"""From a random-access source to host batches: grain, sharded per process, checkpointable.

    source = load_split(config.data, "train")
    tokenizer = load_tokenizer(config.data)
    it = train_iterator(source, global_batch_size=G, seed=0, mesh=mesh,
                        transform=ModelInputs(tokenizer, config.data.resolution))
    batch = imgsynth.sharding.to_global(next(it), mesh)   # this process's share → global arrays
    state = it.get_state()                                 # and later it.set_state(state)

The training stream is one global sequence: shuffle (reshuffled each epoch), repeat, then
process p takes elements p, p + P, p + 2P, ... and batches them by G / P, so the P processes'
batches at one step together hold exactly the global batch a single process would see.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from imgsynth.data import build, mapped, records, scene as scene_lib
from imgsynth.data.spec import DataSpec
from imgsynth.data.tokenizer import ByteTokenizer, WordTokenizer, load as load_tokenizer_file

# Threads decoding records inside one process, and batches kept ready ahead of the consumer.
NUM_THREADS = 2
PREFETCH_BATCHES = 4


# ---------------------------------------------------------------------------------------------
# Sources and tokenizers from config.data.

def load_split(config_data, split: str):
    """A random-access source (len, getitem) of records in the suite's layout for `split`
    ('train', 'validation', 'test', or TFDS slicing such as 'train[:10%]')."""
    spec = DataSpec.of(config_data)
    if spec.name == "tfds":
        return mapped.source(spec, split)
    path = build.dataset_dir(spec)
    if not build.is_complete(path):
        raise FileNotFoundError(
            f"dataset {spec.name!r} is not built at {path}: call "
            f"imgsynth.data.build.build_if_missing(config.data) or run "
            f"`python -m imgsynth.data.build --dataset={spec.name} --data_dir={spec.data_dir} ...`")
    splits = tfds.builder_from_directory(path).info.splits
    if split.split("[")[0] not in splits:
        raise ValueError(f"{path} has splits {list(splits)}, not {split!r}")
    return records.RecordSource(path, split)


def load_tokenizer(config_data) -> WordTokenizer | ByteTokenizer:
    """The caption tokenizer the config names, at `text_max_len`."""
    spec = DataSpec.of(config_data)
    if spec.tokenizer == "byte":
        return ByteTokenizer(spec.text_max_len)
    path = build.vocab_path(spec)
    if path is None:  # a label template: the vocabulary is the template over all class names
        return WordTokenizer.build(mapped.captions(spec), spec.text_max_len)
    try:
        return load_tokenizer_file(path, max_len=spec.text_max_len)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no vocabulary at {path}: call "
                                "imgsynth.data.build.build_if_missing(config.data) first") from e


# ---------------------------------------------------------------------------------------------
# Record → model inputs.

def scene_arrays(objects) -> dict[str, np.ndarray]:
    """A record's `objects` as fixed-size int32 [MAX_OBJECTS] arrays, -1 where no object."""
    out = {}
    for key in ("shape", "color", "size", "row", "col"):
        values = np.asarray(objects[key], np.int32).reshape(-1)
        padded = np.full(scene_lib.MAX_OBJECTS, -1, np.int32)
        padded[:len(values)] = values[:scene_lib.MAX_OBJECTS]
        out[f"scene_{key}"] = padded
    return out


@dataclasses.dataclass
class ModelInputs:
    """The standard transform: image float32 HWC in [-1, 1], caption → `text_ids` int32 [L] and
    `text_mask` bool [L], `category` int32; with `include_scene`, the scene as `scene_*` arrays
    (see `scene_arrays`). No augmentation: a flip would break captions about position."""
    tokenizer: WordTokenizer | ByteTokenizer
    resolution: int
    include_scene: bool = False

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
        image = np.asarray(record["image"])
        if image.shape != (self.resolution, self.resolution, 3):
            raise ValueError(f"record image has shape {image.shape}, expected "
                             f"{(self.resolution, self.resolution, 3)}: the dataset was built at "
                             "another resolution than config.data.resolution")
        ids, mask = self.tokenizer.encode([record["caption"]])
        out = {
            "image": image.astype(np.float32) * (2.0 / 255.0) - 1.0,
            "text_ids": ids[0],
            "text_mask": mask[0],
            "category": np.int32(record["category"]),
        }
        if self.include_scene:
            out.update(scene_arrays(record["objects"]))
        return out


# ---------------------------------------------------------------------------------------------
# Iterators.

def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        process_index, process_count = jax.process_index(), jax.process_count()
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")
    return process_index, process_count


def per_process_batch_size(global_batch_size: int, process_count: int, mesh=None) -> int:
    """global_batch_size / process_count, after checking it divides over processes and devices."""
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size} must be positive")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} does not divide over {process_count} "
            f"processes: use a multiple of {process_count}")
    if mesh is not None:
        from imgsynth.sharding import data_parallel_size
        dp = data_parallel_size(mesh)
        if global_batch_size % dp:
            raise ValueError(
                f"global_batch_size={global_batch_size} does not divide over the {dp} "
                f"data-parallel devices of the mesh {dict(mesh.shape)}: use a multiple of {dp}")
    return global_batch_size // process_count


def _map_dataset(source) -> grain.MapDataset:
    return source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)


def train_iterator(source, *, global_batch_size: int, seed: int,
                   transform: Callable[[dict], dict] | None = None,
                   num_epochs: int | None = None, mesh=None,
                   process_index: int | None = None, process_count: int | None = None,
                   num_threads: int = NUM_THREADS, prefetch_batches: int = PREFETCH_BATCHES,
                   worker_count: int = 0) -> grain.DatasetIterator:
    """Shuffled, repeated (forever when num_epochs is None) batches of this process's share.

    Returns a grain iterator whose `get_state()` / `set_state()` restore its exact position.
    Epochs end on whole global batches (the tail of the last one is dropped), so every process
    yields the same number of batches. `worker_count` > 0 moves decoding to that many processes
    (the transform must then be picklable).
    """
    process_index, process_count = _processes(process_index, process_count)
    batch = per_process_batch_size(global_batch_size, process_count, mesh)
    ds = _map_dataset(source)
    if len(ds) == 0:
        raise ValueError("the source is empty")
    ds = ds.shuffle(seed=seed).repeat(num_epochs)
    if num_epochs is not None:
        ds = ds[:len(ds) // global_batch_size * global_batch_size]
    ds = ds[process_index::process_count]
    if transform is not None:
        ds = ds.map(transform)
    ds = ds.batch(batch, drop_remainder=True)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch_batches))
    if worker_count > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it_ds)


@dataclasses.dataclass
class _Padded:
    """Element i of `ds` with valid=True for i < n, else element 0 with valid=False."""
    ds: grain.MapDataset
    n: int

    def __call__(self, i: int) -> dict:
        element = self.ds[i if i < self.n else 0]
        if not isinstance(element, dict):
            raise TypeError("eval_batches needs dict elements (use a transform that returns one)")
        return {**element, "valid": np.bool_(i < self.n)}


def eval_batches(source, *, global_batch_size: int,
                 transform: Callable[[dict], dict] | None = None,
                 num_examples: int | None = None, mesh=None,
                 process_index: int | None = None, process_count: int | None = None,
                 num_threads: int = NUM_THREADS) -> grain.IterDataset:
    """The first `num_examples` (default: all) in order, once, in this process's batches.

    The last global batch is padded to full size; each batch has a bool `valid` [B] that is
    False on padding, so metrics average over valid entries only. Iterate it as often as needed:
    every pass yields the same batches.
    """
    process_index, process_count = _processes(process_index, process_count)
    batch = per_process_batch_size(global_batch_size, process_count, mesh)
    ds = _map_dataset(source)
    n = len(ds) if num_examples is None else int(num_examples)
    if not 0 < n <= len(ds):
        raise ValueError(f"num_examples={num_examples} must be in [1, {len(ds)}] for this source")
    ds = ds[:n]
    if transform is not None:
        ds = ds.map(transform)
    total = math.ceil(n / global_batch_size) * global_batch_size
    padded = grain.MapDataset.range(total).map(_Padded(ds, n))
    padded = padded[process_index::process_count].batch(batch)
    return padded.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                    prefetch_buffer_size=PREFETCH_BATCHES))
