"""Builds the shared stages a run needs: data, autoencoder, encoded data, judge, alignment.

    python -m launch.prepare --config=launch/grid_config.py:grid=PATH,run=NAME

The launcher calls this once per distinct data/autoencoder setting of a grid, before training; the
stages themselves (`imgsynth.stages.prepare`) skip whatever is already complete.
"""
from __future__ import annotations

import logging


def main(argv) -> None:
    del argv
    logging.basicConfig(level=logging.INFO)
    from imgsynth import stages
    print(f"stage outputs ready: {stages.prepare(_CONFIG.value)}")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    app.run(main)
