"""The CPU study: 3 paradigms x 3 sizes x 4 budgets (36 runs) on the full r32 shapes data.

    python -m launch --grid=experiments/grids/cpu_study.py --workdir=./cpu_study --parallel=2

A miniature of the paper's grid: budgets span 10x and sizes 24x in FLOPs per example. Measured
on an idle 2-core CPU (docs/benchmarks.md): the whole study from an empty cache in 1 h 31 min —
shared stages (full r32 data, two autoencoders, judge, alignment model) 23 min, 36 runs trained
in 76 and evaluated in 57 core-minutes (an S flow-matching evaluation ~6 minutes of one core).
The smallest size had the lowest eval loss at every budget, so the isoFLOP view brackets an
optimum only at 2e12 for flow matching. `--runs` selects a subset (e.g. `--runs='-(T|XS)-'`).
Run the ablation grids in the same workdir: they are compared against these runs.
"""

PARADIGMS = ("flow", "maskgit", "ar")
SIZES = ("T", "XS", "S")
BUDGETS = (5e11, 1e12, 2e12, 5e12)   # T: 265-2,650 steps; S: 11-110 steps

OVERRIDES = {
    "global_batch_size": 32,
    "optimizer.warmup_steps": 10,
    "ema_decay": 0.99,          # runs are 11-2,650 steps: a ~100-step average
    "log_every_steps": 25,
    "eval_every_steps": 250,
    "eval_examples": 512,
    "checkpoint_every_steps": 500,
}


def sweep(add):
    for paradigm in PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                add(paradigm=paradigm, size=size, budget=budget, overrides=OVERRIDES)
