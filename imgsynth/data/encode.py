"""Precompute: images → KL latents or LFQ token ids, once per (autoencoder, dataset).

    python -m imgsynth.data.encode --autoencoder=AE_WORKDIR --data_dir=DIR [--builder_config=r32]

Writes `<AE_WORKDIR>/encoded/<dataset>/{train,validation}.array_record` (one msgpack record per
image: `latents` float32 [h, w, c] (already scaled) or `tokens` int32 [h, w], plus `text_ids`,
`text_mask`, `category`) and `encoded.json` naming the autoencoder's weight hash. `text_ids` are
the data tokenizer's ids int32 [L], or — with a frozen caption encoder (`text.encoder=clip`,
models/frozen_text.py) — its states float32 [L, W], computed here once per caption; such a
dataset lives in `<dataset>-text-<encoder identity>`, so another encoder never reuses it. Generator
runs read it with `load_encoded`, which refuses latents made by another autoencoder than the one
that will decode them, and states of another text encoder than the run's.
"""
from __future__ import annotations

import json
import logging
import os

import grain
import jax.numpy as jnp
import ml_collections
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from flax import nnx, serialization

from imgsynth import io
from imgsynth.data import build, pipeline
from imgsynth.data.spec import DataSpec

INFO_FILE = "encoded.json"
SPLITS = ("train", "validation")


def encoded_dir(ae_workdir: str, config_data, text_encoder: str = "") -> str:
    """Where the dataset encoded by this autoencoder (and frozen text encoder identity, '' for
    the trained one) lives."""
    spec = DataSpec.of(config_data)
    name = spec.shapes_config if spec.name == "shapes" else (spec.folder_name or spec.tfds_name)
    text = f"-text-{text_encoder}" if text_encoder else ""
    return os.path.join(ae_workdir, "encoded", f"{spec.name}-{name}{text}")


def is_complete(path: str, autoencoder_hash: str, text_encoder: str = "") -> bool:
    """Whether `path` holds both splits encoded by the autoencoder with this weight hash and the
    text encoder with this identity."""
    done = _read_info(path)
    return (done is not None and done["autoencoder_hash"] == autoencoder_hash
            and done.get("text_encoder", "") == text_encoder)


def encode(model, info: dict, ae_workdir: str, config_data, *, text_encoder=None,
           batch_size: int = 256, log=logging.info) -> str:
    """Encodes the train and validation splits with `model` (the autoencoder of `ae_workdir`,
    `info` its autoencoder.json) and, given a `frozen_text.FrozenTextEncoder`, the captions with
    it; skipped when already complete for these weights."""
    text = text_encoder.identity if text_encoder is not None else ""
    out = encoded_dir(ae_workdir, config_data, text)
    if is_complete(out, info["hash"], text):
        log(f"{out} is complete; nothing to do")
        return out
    pipeline.load_split(config_data, "train")   # a clear error now if the dataset is missing
    transform = pipeline.ModelInputs(pipeline.load_tokenizer(config_data), config_data.resolution)
    encode_fn = nnx.jit(lambda m, x: m.encode_latents(x))
    key = "latents" if info["kind"] == "kl" else "tokens"
    counts = {}
    with io.staged_dir(out) as tmp:
        for split in SPLITS:
            source = pipeline.load_split(config_data, split)
            writer = ArrayRecordWriter(os.path.join(tmp, f"{split}.array_record"), "group_size:1")
            for start in range(0, len(source), batch_size):
                raw = [source[i] for i in range(start, min(start + batch_size, len(source)))]
                records = [transform(r) for r in raw]
                if text_encoder is not None:
                    states, masks = text_encoder([r["caption"] for r in raw])
                    for r, state, mask in zip(records, states, masks):
                        r["text_ids"], r["text_mask"] = state, mask
                images = np.stack([r["image"] for r in records])
                pad = batch_size - len(images)   # one compiled shape
                padded = np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0)))
                z = np.asarray(encode_fn(model, jnp.asarray(padded)))
                for r, latent in zip(records, z[: len(records)]):
                    writer.write(serialization.msgpack_serialize({
                        key: latent.astype(np.float32 if key == "latents" else np.int32),
                        "text_ids": r["text_ids"], "text_mask": r["text_mask"],
                        "category": np.int32(r["category"])}))
            writer.close()
            counts[split] = len(source)
            log(f"encoded {counts[split]} {split} images with {info['kind']} autoencoder {info['hash']}")
        if text_encoder is not None:
            log(f"encoded the captions with frozen text encoder {text} "
                f"({text_encoder.num_truncated} truncated to {text_encoder.max_len} tokens)")
        meta = {"autoencoder": os.path.abspath(ae_workdir), "autoencoder_hash": info["hash"],
                "text_encoder": text,
                "kind": info["kind"], "key": key, "latent_shape": info["latent_shape"],
                "counts": counts, "data": dict(DataSpec.of(config_data).__dict__)}
        with open(os.path.join(tmp, INFO_FILE), "w") as f:
            json.dump(meta, f, indent=2, default=str)
    return out


def _read_info(path: str) -> dict | None:
    return io.read_json(os.path.join(path, INFO_FILE))


class EncodedSource:
    """Random-access records of one encoded split (decoded from msgpack), for the grain pipeline."""

    def __init__(self, path: str, split: str):
        self._source = grain.sources.ArrayRecordDataSource([os.path.join(path, f"{split}.array_record")])

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return serialization.msgpack_restore(self._source[index])


def load_encoded(path: str, split: str, *, autoencoder_hash: str | None = None,
                 text_encoder: str = "") -> EncodedSource:
    """The encoded split; refuses latents from another autoencoder than `autoencoder_hash` and
    caption states from another text encoder than `text_encoder` ('' the trained one: ids)."""
    info = _read_info(path)
    if info is None:
        raise FileNotFoundError(f"no encoded dataset at {path}; run `python -m imgsynth.data.encode "
                                "--autoencoder=AE_WORKDIR --data_dir=DIR`")
    if autoencoder_hash is not None and info["autoencoder_hash"] != autoencoder_hash:
        raise ValueError(
            f"{path} was encoded by autoencoder {info['autoencoder_hash']}, but this run decodes "
            f"with {autoencoder_hash}: re-encode with the run's autoencoder, or point "
            "autoencoder.workdir at the one that made these latents")
    if info.get("text_encoder", "") != text_encoder:
        raise ValueError(
            f"{path} holds captions for text encoder {info.get('text_encoder') or 'trained'!r}, "
            f"but this run's is {text_encoder or 'trained'!r}: re-encode with the run's")
    return EncodedSource(path, split)


if __name__ == "__main__":
    from absl import flags

    from imgsynth import cli

    _AE = flags.DEFINE_string("autoencoder", None, "Trained autoencoder workdir.")
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset directory (as for data.build).")
    _BUILDER = flags.DEFINE_string("builder_config", "r32", "Shapes builder config.")
    _RES = flags.DEFINE_integer("resolution", 32, "Image resolution.")
    flags.mark_flags_as_required(["autoencoder", "data_dir"])

    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO)
        cfg = ml_collections.ConfigDict(dict(
            name="shapes", data_dir=_DATA_DIR.value, resolution=_RES.value,
            builder_config=_BUILDER.value, text_max_len=16, tokenizer="word"))
        with cli.usage_errors(ValueError):
            build.dataset_dir(cfg)   # checks the spec
        if not build.is_complete(build.dataset_dir(cfg)):
            raise cli.UsageError(f"no complete dataset at {build.dataset_dir(cfg)}; build it with "
                             f"`python -m imgsynth.data.build --dataset=shapes --data_dir={_DATA_DIR.value} "
                             f"--config={_BUILDER.value}`")
        from imgsynth.models import autoencoder_files
        with cli.usage_errors(FileNotFoundError, NotADirectoryError):
            model, info = autoencoder_files.load(_AE.value)
        print(encode(model, info, _AE.value, cfg, log=print))

    cli.run_absl(main)
