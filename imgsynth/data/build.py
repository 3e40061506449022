"""Build a dataset and its word vocabulary once; every later call finds it and does nothing.

    python -m imgsynth.data.build --dataset=shapes --data_dir=DIR [--resolution=32] [--config=r32_small]
    python -m imgsynth.data.build --dataset=folder --src=DIR --name=NAME --data_dir=DIR [--resolution=32]
        [--validation_fraction=0.05 --test_fraction=0.1]
    python -m imgsynth.data.build --dataset=tfds --tfds_name=coco_captions --text_key=captions/text --data_dir=DIR

A dataset is built under a hidden temporary directory in `data_dir`, completed with its
`vocab.json` and `build_summary.json`, and only then renamed into place, so a directory at the
final path is always complete. A lock file serialises processes on one machine; in a multi-host
job only process 0 builds and the others wait for the finished directory.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import tensorflow_datasets as tfds

from imgsynth import cli, io
from imgsynth.data import folder as folder_lib
from imgsynth.data import mapped, records, shapes
from imgsynth.data.spec import DataSpec
from imgsynth.data.tokenizer import WordTokenizer

VOCAB_FILE = "vocab.json"
SUMMARY_FILE = "build_summary.json"
FINGERPRINT_FILE = "fingerprint.json"
_INFO_FILE = "dataset_info.json"

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Where things live.

def dataset_dir(config_data) -> str | None:
    """The final directory of a shapes or folder dataset (None for a mapped TFDS dataset)."""
    spec = DataSpec.of(config_data)
    if spec.name == "shapes":
        return os.path.join(spec.data_dir, shapes.NAME, spec.shapes_config, shapes.VERSION)
    if spec.name == "folder":
        return os.path.join(spec.data_dir, folder_lib.NAME,
                            folder_lib.config_name(spec.folder_name, spec.resolution),
                            folder_lib.VERSION)
    return None


def vocab_path(config_data) -> str | None:
    """The word vocabulary file; None where it is made on the fly (a label template)."""
    spec = DataSpec.of(config_data)
    if spec.name != "tfds":
        return os.path.join(dataset_dir(spec), VOCAB_FILE)
    if spec.label_key:
        return None
    root = spec.data_dir or os.fspath(tfds.core.constants.DATA_DIR)
    safe = f"{spec.tfds_name}-{spec.text_key}".replace("/", "__").replace(":", "_")
    return os.path.join(root, "imgsynth_vocab", f"{safe}.json")


def is_complete(path: str) -> bool:
    return (os.path.exists(os.path.join(path, _INFO_FILE))
            and os.path.exists(os.path.join(path, VOCAB_FILE)))


def fingerprint(path: str) -> str:
    """The identity of a built dataset: a hash of its record files, features and vocabulary (not
    of where it lies, nor of the build's timing), so the caches keyed by it — autoencoders, judges,
    alignment models — are found again in a moved or copied data_dir. Hashed once, then kept in
    fingerprint.json beside the records."""
    stored = os.path.join(path, FINGERPRINT_FILE)
    try:
        return io.read_json(stored)["sha256"]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    if not is_complete(path):
        raise FileNotFoundError(f"no complete dataset at {path}")
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name in (FINGERPRINT_FILE, SUMMARY_FILE, _INFO_FILE) or name.startswith("."):
            continue   # dataset_info.json holds the build's paths and times; the records do not
        digest.update(name.encode() + b"\0")
        with open(os.path.join(path, name), "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    value = digest.hexdigest()
    if io.is_writer():
        try:
            io.write_json(stored, {"sha256": value})
        except OSError:   # a read-only dataset: hash again next time
            pass
    return value


# ---------------------------------------------------------------------------------------------
# Building.

def _train_captions(path: str) -> list[str]:
    raw = records.RecordSource(path, "train").raw
    return [records.decode_caption(r) for start in range(0, len(raw), 4096)
            for r in raw.__getitems__(range(start, min(start + 4096, len(raw))))]


def _write_vocab(path: str, text_max_len: int, log: Log) -> None:
    tokenizer = WordTokenizer.build(_train_captions(path), text_max_len)
    tokenizer.save(os.path.join(path, VOCAB_FILE))
    log(f"vocabulary: {tokenizer.vocab_size} tokens → {os.path.join(path, VOCAB_FILE)}")


def _wait_until_complete(path: str, timeout_s: float, log: Log) -> str:
    log(f"waiting for process 0 to build {path}")
    deadline = time.monotonic() + timeout_s
    while not is_complete(path):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{path} was not completed within {timeout_s:.0f} s. Process 0 builds datasets; "
                "data_dir must be on a filesystem all processes share, or be built on each host "
                "beforehand with `python -m imgsynth.data.build`.")
        time.sleep(2.0)
    return path


def _ensure(final_dir: str, make_builder: Callable[[str], tfds.core.DatasetBuilder],
            text_max_len: int, log: Log, wait_timeout_s: float) -> str:
    """Builds `final_dir` with `make_builder(tmp_data_dir)` unless it is already complete."""
    if is_complete(final_dir):
        log(f"{final_dir} is complete; nothing to do")
        return final_dir
    if not io.is_writer():
        return _wait_until_complete(final_dir, wait_timeout_s, log)
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(final_dir)))
    os.makedirs(data_dir, exist_ok=True)
    lock_name = os.path.relpath(final_dir, data_dir).replace(os.sep, "-")
    with io.FileLock(os.path.join(data_dir, f".{lock_name}")):
        if is_complete(final_dir):
            log(f"{final_dir} was completed by another process; nothing to do")
            return final_dir
        if os.path.exists(os.path.join(final_dir, _INFO_FILE)):  # data there, vocabulary not
            _write_vocab(final_dir, text_max_len, log)
            return final_dir
        if os.path.exists(final_dir):
            raise RuntimeError(f"{final_dir} exists but holds no dataset: remove it and rebuild")
        tmp_root = tempfile.mkdtemp(prefix=".build-", dir=data_dir)
        try:
            start = time.perf_counter()
            builder = make_builder(tmp_root)
            builder.download_and_prepare(download_dir=os.path.join(tmp_root, "downloads"))
            built = os.fspath(builder.data_dir)
            seconds = time.perf_counter() - start
            splits = {name: info.num_examples for name, info in builder.info.splits.items()}
            summary = {"splits": splits, "seconds": round(seconds, 2),
                       "records_per_s": round(sum(splits.values()) / seconds, 1)}
            summary.update(getattr(builder, "summary", {}))
            io.atomic_write(os.path.join(built, SUMMARY_FILE), io.json_text(summary, indent=1))
            _write_vocab(built, text_max_len, log)
            os.makedirs(os.path.dirname(final_dir), exist_ok=True)
            os.rename(built, final_dir)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    log(f"built {final_dir}: {json.dumps(summary, sort_keys=True)}")
    return final_dir


def build_shapes(data_dir: str, config: str | shapes.ShapesConfig = "r32", *,
                 text_max_len: int = 16, num_workers: int | None = None,
                 chunk_size: int = shapes.CHUNK_SIZE, log: Log = logging.info,
                 wait_timeout_s: float = 7200.0) -> str:
    """The captioned shapes dataset for a named config (or a ShapesConfig, e.g. tiny test sizes)."""
    name = config if isinstance(config, str) else config.name
    final_dir = os.path.join(data_dir, shapes.NAME, name, shapes.VERSION)
    return _ensure(final_dir, lambda tmp: shapes.CaptionedShapes(
        config=config, data_dir=tmp, num_workers=num_workers, chunk_size=chunk_size),
        text_max_len, log, wait_timeout_s)


def build_folder(data_dir: str, src: str, name: str, resolution: int = 32, *,
                 validation_fraction: float = 0.05, test_fraction: float = 0.1,
                 text_max_len: int = 16, log: Log = logging.info,
                 wait_timeout_s: float = 7200.0) -> str:
    """A dataset from a folder of captioned images (train / validation / test splits); skips and
    conversions go to the summary."""
    config = folder_lib.FolderConfig(name=folder_lib.config_name(name, resolution),
                                     src=os.path.abspath(src), resolution=resolution,
                                     validation_fraction=validation_fraction,
                                     test_fraction=test_fraction)
    final_dir = os.path.join(data_dir, folder_lib.NAME, config.name, folder_lib.VERSION)

    def make_builder(tmp):
        return folder_lib.CaptionedFolder(config=config, data_dir=tmp)

    path = _ensure(final_dir, make_builder, text_max_len, log, wait_timeout_s)
    with open(os.path.join(path, SUMMARY_FILE)) as f:
        summary = json.load(f)
    if "skipped" in summary:
        log(f"{name}: found {summary.get('found')} images; written {summary.get('written')}; "
            f"skipped {summary['skipped'] or 'none'}; converted {summary['converted'] or 'none'}; "
            f"labels {summary.get('labels') or 'none'}")
    return path


def build_tfds_vocab(config_data, *, log: Log = logging.info) -> str | None:
    """The word vocabulary of a mapped TFDS dataset with a text field (label templates need
    none). The dataset itself must already be prepared."""
    spec = DataSpec.of(config_data)
    path = vocab_path(spec)
    if path is None or os.path.exists(path):
        log(f"{spec.tfds_name}: vocabulary {'not needed' if path is None else 'present'}")
        return path
    if io.is_writer():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with io.FileLock(path):
            if not os.path.exists(path):
                WordTokenizer.build(mapped.captions(spec, "train"), spec.text_max_len).save(path)
                log(f"{spec.tfds_name}: vocabulary → {path}")
    else:
        deadline = time.monotonic() + 7200.0
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(2.0)
    return path


def build_if_missing(config_data, *, num_workers: int | None = None,
                     log: Log = logging.info) -> str | None:
    """What the training loop calls: makes sure `config.data` is ready to load, building it if
    needed; safe when several processes call it at once. Returns the dataset directory."""
    spec = DataSpec.of(config_data)
    if spec.name == "shapes":
        return build_shapes(spec.data_dir, spec.shapes_config, text_max_len=spec.text_max_len,
                            num_workers=num_workers, log=log)
    if spec.name == "folder":
        if not spec.src and not is_complete(dataset_dir(spec)):
            raise ValueError(f"config.data.src is required to build folder dataset "
                             f"{spec.folder_name!r} (not found at {dataset_dir(spec)})")
        return build_folder(spec.data_dir, spec.src, spec.folder_name, spec.resolution,
                            text_max_len=spec.text_max_len, log=log)
    if spec.tokenizer == "word":
        build_tfds_vocab(spec, log=log)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = cli.one_line(argparse.ArgumentParser(prog="python -m imgsynth.data.build",
                                                  description=__doc__.split("\n\n")[0]))
    parser.add_argument("--dataset", required=True, choices=("shapes", "folder", "tfds"))
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--config", default="", help="shapes builder config, e.g. r32_small")
    parser.add_argument("--src", default="", help="folder: the image folder")
    parser.add_argument("--name", default="", help="folder: the dataset's name")
    parser.add_argument("--validation_fraction", type=float, default=0.05,
                        help="folder: share of the images in the validation split")
    parser.add_argument("--test_fraction", type=float, default=0.1,
                        help="folder: share of the images in the test split (evaluation's real "
                             "images and prompts)")
    parser.add_argument("--tfds_name", default="")
    parser.add_argument("--text_key", default="")
    parser.add_argument("--text_max_len", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=None,
                        help="shapes: generation processes (default: one per core)")
    args = parser.parse_args(argv)
    with cli.usage_errors(ValueError, FileNotFoundError, NotADirectoryError, FileExistsError):
        _build(parser, args)


def _build(parser, args) -> None:
    resolution = args.resolution
    if resolution is None:
        resolution = int(args.config[1:].split("_")[0]) if args.config[1:2].isdigit() else 32
    log = print
    if args.dataset == "shapes":
        spec = DataSpec.of({"name": "shapes", "data_dir": args.data_dir,
                            "resolution": resolution, "builder_config": args.config})
        build_shapes(spec.data_dir, spec.shapes_config, text_max_len=args.text_max_len,
                     num_workers=args.num_workers, log=log)
    elif args.dataset == "folder":
        if not args.src or not args.name:
            parser.error("--dataset=folder needs --src and --name")
        spec = DataSpec.of({"name": "folder", "data_dir": args.data_dir, "resolution": resolution,
                            "folder_name": args.name, "src": args.src})
        build_folder(spec.data_dir, spec.src, spec.folder_name, spec.resolution,
                     validation_fraction=args.validation_fraction,
                     test_fraction=args.test_fraction, text_max_len=args.text_max_len, log=log)
    else:
        build_tfds_vocab({"name": "tfds", "data_dir": args.data_dir, "tfds_name": args.tfds_name,
                          "text_key": args.text_key, "text_max_len": args.text_max_len}, log=log)


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
