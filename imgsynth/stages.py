"""Pipeline stages a generator run needs, each run once and shared by every run that needs it.

dataset → autoencoder (per kind) → encoded latents/tokens. Each stage lives under
`config.cache_dir` (or the paths the config names), is skipped when its output is complete, and is
safe to call from several processes at once (the stage itself locks and renames).
"""
from __future__ import annotations

import numpy as np

from imgsynth import registry


def synthetic_records(config, n: int, seed: int) -> list[dict]:
    """Random records of exactly the shapes a paradigm trains on: for throughput runs and tests."""
    batch = registry.paradigm_module(config).example_batch(config, n, np.random.default_rng(seed))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def generator_data(config):
    """(train, eval) random-access sources of the records the paradigm trains on."""
    if config.data.name == "synthetic":
        n = config.data.synthetic_examples
        return (synthetic_records(config, n, config.seed),
                synthetic_records(config, max(n // 8, config.global_batch_size), config.seed + 1))
    raise NotImplementedError(
        f"data.name={config.data.name!r}: encoded datasets are not wired into training yet; "
        "use data.name='synthetic'")
