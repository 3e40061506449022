"""The random-access record sources a generator trains and evaluates on.

Encoded latents/tokens made by the run's autoencoder (the study), or random records of exactly the
shapes a paradigm trains on (`data.name=synthetic`: throughput runs and tests).
"""
from __future__ import annotations

import numpy as np

from imgsynth.data import encode


def synthetic_records(module, config, n: int, seed: int) -> list[dict]:
    """`n` random records from the paradigm module's `example_batch`."""
    batch = module.example_batch(config, n, np.random.default_rng(seed))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def synthetic(module, config) -> tuple[list[dict], list[dict]]:
    """(train, eval) random records; eval has an eighth as many (at least one global batch)."""
    n = config.data.synthetic_examples
    return (synthetic_records(module, config, n, config.seed),
            synthetic_records(module, config, max(n // 8, config.global_batch_size), config.seed + 1))


def encoded(path: str, autoencoder_hash: str, text_encoder: str = "") -> tuple:
    """(train, validation) of an encoded dataset; refuses latents of another autoencoder and
    caption states of another frozen text encoder."""
    return tuple(encode.load_encoded(path, split, autoencoder_hash=autoencoder_hash,
                                     text_encoder=text_encoder)
                 for split in encode.SPLITS)
