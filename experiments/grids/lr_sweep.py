"""Learning rate per (paradigm, size), tuned at a length that represents the study's trunks.

    python -m launch --grid=lr_sweep --workdir=./lr_sweep --parallel=2
    python -m launch.tune --workdir=./lr_sweep      # writes experiments/tuned_lr.json

The rule: each size trains at a quarter of its largest cpu_study budget (T 8e11 FLOPs, ~340-420
steps; XS 2.5e12, ~175-185; S 2.5e13, ~545-560), a quarter of the steps of the trunk that serves
all of that size's budgets, with the study's settings and a WSD schedule (the last 20 % cooled
down, as a branch is). A sweep far shorter than the trunk measures the wrong thing: the earlier
one at 2e12 FLOPs chose S's rates from 45 steps and cpu_study used them for 2,200, and short runs
favour high rates. Rates are a factor of 2 apart; S leaves out 8e-3, which no paradigm can want
there (6e-3 was every paradigm's worst at S even at 45 steps). One run per rate (labelled
`lr=...`, so the study's fits leave them out), trained only: the choice is the lowest final eval
loss of the EMA weights, read from metrics.jsonl; `launch.tune` names any choice at the edge of
its rates. cpu_study reads the winners (`common.tuned_lr`); the sweep is not part of its time.
"""
from experiments.grids import cpu_study

FRACTION = 0.25        # of the size's largest cpu_study budget: of its trunk's steps
LEARNING_RATES = {"T": (5e-4, 1e-3, 2e-3, 4e-3, 8e-3), "XS": (5e-4, 1e-3, 2e-3, 4e-3, 8e-3),
                  "S": (5e-4, 1e-3, 2e-3, 4e-3)}


def budget(size: str) -> float:
    return FRACTION * max(cpu_study.BUDGETS[size])


def sweep(add):
    for paradigm in cpu_study.PARADIGMS:
        for size in cpu_study.SIZES:
            for lr in LEARNING_RATES[size]:
                add(paradigm=paradigm, size=size, budget=budget(size), evaluate=False,
                    overrides={**cpu_study.OVERRIDES, "optimizer.lr": lr,
                               "optimizer.schedule": "wsd"}, ablation={"lr": lr})
