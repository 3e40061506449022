"""The training loop's own throughput and MFU, on synthetic records of the right shapes.

    python benchmarks/train_throughput.py --config=experiments/flow.py:size=M [--steps=30]

Runs `imgsynth.train` end to end (sharded state, one-step-late metrics, checkpoint at the end) in a
temporary workdir, and reports the median `perf/mfu` and step time the loop logged, after the
first logged window (which holds warm-up). Final line: one JSON object with `mfu` and `steps_per_s`.
"""
from __future__ import annotations

import json
import statistics
import tempfile

import jax
from absl import app, flags
from ml_collections import config_flags

from imgsynth import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.")
_STEPS = flags.DEFINE_integer("steps", 30, "Training steps to run.")
_LOG_EVERY = flags.DEFINE_integer("log_every", 5, "Steps per logged window.")


def main(argv):
    del argv
    config = _CONFIG.value
    config.data.name = "synthetic"
    config.data.synthetic_examples = max(4 * config.global_batch_size, 256)
    config.total_steps, config.total_flops, config.total_examples = _STEPS.value, None, None
    config.log_every_steps = _LOG_EVERY.value
    config.eval_every_steps = config.checkpoint_every_steps = 10 ** 9
    config.eval_examples = config.global_batch_size
    with tempfile.TemporaryDirectory() as workdir:
        train.train(config, workdir)
        with open(f"{workdir}/metrics.jsonl") as f:
            rows = [json.loads(line) for line in f]
    windows = [r for r in rows if "perf/mfu" in r and r["step"] % _LOG_EVERY.value == 0][1:]
    if not windows:
        raise SystemExit("too few steps for a steady-state window; raise --steps")
    step_s = statistics.median(r["perf/step_time_s"] for r in windows)
    result = {"paradigm": config.paradigm, "size": config.size,
              "global_batch_size": config.global_batch_size, "steps": _STEPS.value,
              "mfu": statistics.median(r["perf/mfu"] for r in windows),
              "steps_per_s": 1.0 / step_s, "step_time_s": step_s,
              "images_per_s": config.global_batch_size / step_s,
              "device": jax.devices()[0].device_kind, "devices": jax.device_count()}
    for k, v in result.items():
        print(f"{k:<20} {v:.4g}" if isinstance(v, float) else f"{k:<20} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
