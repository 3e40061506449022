"""EMA ablation: a shorter and a longer weight average than the CPU study's (ema_decay 0.99).

    python -m launch --grid=experiments/grids/ablation_ema.py --workdir=./cpu_study

Run in the workdir of `cpu_study`: the report compares each run here with the main run of the
same paradigm, size and budget (every run evaluates raw and EMA weights, so the main grid alone
already shows what averaging adds; this grid shows how much depends on the window).
"""
from experiments.grids import cpu_study

SIZES = ("T", "XS")
BUDGETS = (2e12, 5e12)
EMA_DECAYS = (0.9, 0.999)


def sweep(add):
    for paradigm in cpu_study.PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                for decay in EMA_DECAYS:
                    add(paradigm=paradigm, size=size, budget=budget,
                        overrides={**cpu_study.OVERRIDES, "ema_decay": decay},
                        ablation={"ema_decay": decay})
