"""Learning rate per (paradigm, size): a few peak rates at one small budget, picked by eval loss.

    python -m launch --grid=lr_sweep --workdir=./lr_sweep --parallel=2
    python -m launch.tune --workdir=./lr_sweep      # writes experiments/tuned_lr.json

Every paradigm and size of the CPU study at 2e12 training FLOPs (T: ~1,050 steps, XS ~150, S ~45)
with the study's settings and its WSD schedule, one run per rate (labelled `lr=...`, so the
study's fits leave them out), trained only: the choice is the lowest final eval loss of the EMA
weights, read from metrics.jsonl. `launch.tune` writes the winners with the workdir, grid and
losses they came from; cpu_study reads them (`common.tuned_lr`). Short runs favour high rates, so
for S (45 steps here, 72-223 in the study) the choice leans high.
"""
from experiments.grids import cpu_study

BUDGET = 2e12
LEARNING_RATES = (1e-3, 3e-3, 6e-3)


def sweep(add):
    for paradigm in cpu_study.PARADIGMS:
        for size in cpu_study.SIZES:
            for lr in LEARNING_RATES:
                add(paradigm=paradigm, size=size, budget=BUDGET, evaluate=False,
                    overrides={**cpu_study.OVERRIDES, "optimizer.lr": lr,
                               "optimizer.schedule": "wsd"}, ablation={"lr": lr})
