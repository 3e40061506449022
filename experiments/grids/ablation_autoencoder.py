"""Autoencoder ablation: the same generators on a weaker autoencoder (narrower bottleneck).

    python -m launch --grid=experiments/grids/ablation_autoencoder.py --workdir=./cpu_study

The KL autoencoder keeps 2 latent channels instead of 4 and the FSQ tokenizer levels
[4, 4, 4, 4] (256 codes) instead of [8, 8, 8, 5, 5, 5] (64,000), at the same downsampling, so
every paradigm sees as many image tokens as in the main grid. Its own autoencoders are trained
and its data encoded once (a separate stage key). Run in the workdir of `cpu_study`; the report
compares with the main runs and groups the instrument ceilings by autoencoder.
"""
from experiments.grids import cpu_study

SIZES = ("T", "XS")
BUDGETS = (1e12, 3.2e12)
WEAK_AUTOENCODER = {"autoencoder.latent_channels": 2, "autoencoder.fsq_levels": (4, 4, 4, 4)}


def sweep(add):
    for paradigm in cpu_study.PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                add(paradigm=paradigm, size=size, budget=budget,
                    overrides=cpu_study.overrides(paradigm, size, **WEAK_AUTOENCODER,
                                                  **{"optimizer.schedule": "wsd",
                                                     "eval.weights": ("ema",)}),
                    ablation={"autoencoder": "small"})
