"""The square: {discrete, continuous} tokens × {raster, random} order, beside whole-image flow
matching — five paradigms on one backbone and one FLOP count, sizes T and XS.

    python -m launch --grid=square --workdir=./square --parallel=2

Per (paradigm, size) one trunk trains at constant rate and each budget (1e12, 3.2e12, 1e13) is a
cooldown branch of it, as in cpu_study, with cpu_study's settings (tuned learning rates where
experiments/tuned_lr.json has them, 3e-3 for the continuous-token paradigms, which it lacks).
The report's square section and its two contrasts ("square: token type", "square: order") read
these runs; at these budgets "no clear lead" is an honest verdict. `--dry_run` prints the
per-run estimate (README, "The square").
"""
from experiments.grids import cpu_study
from imgsynth.registry import PARADIGMS

SIZES = ("T", "XS")
BUDGETS = {"T": (1e12, 3.2e12), "XS": (1e12, 3.2e12, 1e13)}   # cpu_study's, for T and XS
EMA_ONLY = {"eval.weights": ("ema",)}   # the contrasts read the EMA; raw weights are cpu_study's


def sweep(add):
    for paradigm in PARADIGMS:
        for size in SIZES:
            add(paradigm=paradigm, size=size, budgets=BUDGETS[size], schedule="wsd_branches",
                overrides=cpu_study.overrides(paradigm, size, **EMA_ONLY))
