"""EMA ablation: a shorter and a longer weight average than the CPU study's (ema_decay 0.99).

    python -m launch --grid=experiments/grids/ablation_ema.py --workdir=./cpu_study

Run in the workdir of `cpu_study`: the report compares each run here with the main run of the
same paradigm, size and budget (a cooldown branch; these are standalone WSD runs of that budget).
Runs here evaluate raw and EMA weights, so they show both what averaging adds and how much depends
on the window.
"""
from experiments.grids import cpu_study

SIZES = ("T", "XS")
BUDGETS = (1e12, 3.2e12)
EMA_DECAYS = (0.9, 0.999)


def sweep(add):
    for paradigm in cpu_study.PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                for decay in EMA_DECAYS:
                    add(paradigm=paradigm, size=size, budget=budget,
                        overrides=cpu_study.overrides(paradigm, size, **{
                            "ema_decay": decay, "optimizer.schedule": "wsd",
                            "eval.weights": ("raw", "ema")}),
                        ablation={"ema_decay": decay})
