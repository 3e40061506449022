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
    config = _CONFIG.value
    try:
        from imgsynth import stages
        prepare = stages.prepare
    except (ImportError, AttributeError) as e:
        raise SystemExit(
            f"error: imgsynth.stages.prepare is not available in this checkout ({e}); the data, "
            "autoencoder and metric stages cannot be built, so only data.name='synthetic' runs "
            "can train") from None
    print(f"stage outputs ready: {prepare(config)}")


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
    app.run(main)
