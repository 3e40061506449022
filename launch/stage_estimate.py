"""How long a grid's shared stages take before its generators train, for `--dry_run`.

The 32 px shapes data has its judge, alignment model and default autoencoders shipped with the
package: its stages only build the data. Any other dataset (a folder, TFDS) trains an
autoencoder per kind, the alignment model and, for labelled data, the label classifier first.
Each takes a start-up (compiling, reading the data) plus its steps at a per-step time measured on
the 2-core machine; the autoencoder's step scales with its batch and pixels. A rough figure: the
machine's load moves it (the start-ups below were measured at load 20-30, several times an idle
machine's; `python benchmarks/own_data_stages.py` measures them again).
"""
from __future__ import annotations

from collections.abc import Sequence

from launch import grid as grid_lib

# Seconds per step, 2 cores: the shipped autoencoders (default settings: 6,000 steps of 16 images
# at 32 px, ~20 CPU-minutes: docs/autoencoders.md), runlocal's small one and every stage's
# start-up (benchmarks/own_data_stages.py, load 20-30), the shipped alignment model (1,000 steps of
# 256 examples in 23.1 minutes: its alignment.json; the label classifier is its image tower).
AUTOENCODER_STEP_S = {"full": 0.2, "runlocal": 5.2}
AUTOENCODER_BATCH = {"full": 16, "runlocal": 8}
INSTRUMENT_STEP_S = 1.4
STARTUP_S = {"autoencoder": 300.0, "instrument": 170.0}


def ships_instruments(run: grid_lib.Run) -> bool:
    data = run.config.data
    return data.name == "shapes" and data.resolution == 32


def stage_lines(runs: Sequence[grid_lib.Run]) -> list[str]:
    """One line per distinct stage setting of `runs` whose dataset ships no instruments: what
    trains (steps) and about how long; empty when every dataset ships them."""
    keys: dict[str, grid_lib.Run] = {}
    for run in runs:
        if not run.synthetic and not ships_instruments(run):
            keys.setdefault(run.stage_key(), run)
    if not keys:
        return []
    from imgsynth import stages   # jax, tensorflow-datasets: only for data that needs stages
    lines, instruments_counted, grand = [], set(), 0.0
    for run in keys.values():
        c = run.config
        ae = stages.autoencoder_config(c, build_data=False)   # a dry run builds nothing
        size = "runlocal" if ae.get("runlocal") else "full"
        step_s = (AUTOENCODER_STEP_S[size] * ae.global_batch_size / AUTOENCODER_BATCH[size]
                  * (ae.data.resolution / 32) ** 2)
        parts = [(f"autoencoder {ae.autoencoder.kind}", ae.total_steps,
                  STARTUP_S["autoencoder"] + ae.total_steps * step_s)]
        data_key = (str(c.data.to_dict()), str(c.instruments.to_dict()))
        if data_key not in instruments_counted:   # shared by every autoencoder of the data
            instruments_counted.add(data_key)
            for what in ("alignment", "labels"):
                steps = stages.instrument_settings(c, what).steps
                parts.append((what, steps, STARTUP_S["instrument"] + steps * INSTRUMENT_STEP_S))
        total = sum(p[2] for p in parts)
        grand += total
        lines.append(f"stages for {run.name} ({c.data.name} data, nothing ships for it): "
                     + ", ".join(f"{name} {steps} steps" for name, steps, _ in parts)
                     + f": about {grid_lib.format_duration(total)}")
    lines.append(f"stages before the first run trains: about {grid_lib.format_duration(grand)} on "
                 "2 cores, plus building the data (labels: labelled data only; an own-data "
                 "autoencoder at its shortest length until the data is built; README, own data)")
    return lines
