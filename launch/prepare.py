"""Builds the shared stages a run needs: data, autoencoder, encoded data, judge, alignment.

    python -m launch.prepare --config=launch/grid_config.py:grid=PATH,run=NAME

The launcher calls this once per distinct data/autoencoder setting of a grid, before training; the
stages themselves (`imgsynth.stages.prepare`) skip whatever is already complete. It then measures
the devices' peak FLOP/s into the cache dir (`imgsynth.perf`), on cores no run uses yet, so the
runs' MFU and the grid's efficiency divide by a measurement nothing else competed with.
"""
from __future__ import annotations

import logging


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO)
    from imgsynth import perf, stages
    print(f"stage outputs ready: {stages.prepare(_CONFIG.value)}")
    print(f"peak FLOP/s measured here: {perf.training_peak(_CONFIG.value, remeasure=True):.4g}")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    app.run(main)
