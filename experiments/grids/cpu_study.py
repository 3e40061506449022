"""The CPU study: 3 paradigms x 3 sizes, budgets 1e12-1e14 FLOPs by cooldown branches, on the full
r32 shapes data, in under two hours on two cores.

    python -m launch --grid=experiments/grids/cpu_study.py --workdir=./cpu_study --parallel=2

Per (paradigm, size) one trunk trains at constant rate and each budget is a cooldown branch of it
(the last 20 % of its steps decay to the floor), so the budgets of a size cost little more than
the largest. The budgets:
T (~0.3M parameters) at 1e12 and 3.2e12, XS at 1e12, 3.2e12 and 1e13, S at 3.2e12, 1e13 and the
top, 1e14 (~2,200 steps). The top is S's because S's update step uses the cores best (~0.5 of
the matmul peak against XS's ~0.4 and T's ~0.2; docs/benchmarks.md): most of the grid's FLOPs
run there. 3.2e12 has all three sizes, 1e12 and 1e13 two. `--dry_run` estimates 2 h 34 min
sequentially; measured from an empty cache on the idle 2-core machine: 1 h 49 min with stages,
raw (on 120 prompts) and post-hoc EMA evaluations and report, train efficiency 0.49, evaluation
29 % of the core-time (docs/benchmarks.md). Learning rates are the
lr_sweep's (experiments/tuned_lr.json, `launch.tune`; tuned at a quarter of each size's trunk).
Seed replicates of XS at 1e12 measure the seed-to-seed spread; one cosine run per paradigm (XS,
1e12, labelled `schedule=cosine`) checks the branches against the usual schedule. Evaluation
scores the post-hoc EMA (the σ_rel each run's validation loss chose, `imgsynth.ema`) on 300
prompts and the raw weights on the first 120 of them, compared with the EMA's images of those
120: this grid measures finding 4 (EMA helps diffusion more than the token methods).
`--runs` selects a subset (e.g. `--runs='-XS-'`). Run the ablation grids in the same workdir:
they compare against these.
"""
from experiments import common

PARADIGMS = ("flow", "maskgit", "ar")
SIZES = ("T", "XS", "S")
BUDGETS = {"T": (1e12, 3.2e12), "XS": (1e12, 3.2e12, 1e13), "S": (3.2e12, 1e13, 1e14)}
SEEDS = ("XS", 1e12, (1, 2))       # replicates of the XS branch at 1e12 (seed 0)
COSINE_CONTROL = ("XS", 1e12)
DEFAULT_LR = 3e-3                  # where tuned_lr.json has no entry
TUNED_LR_FILE = common.TUNED_LR_FILE   # the launcher keeps a copy in the workdir, for the report

OVERRIDES = {
    "global_batch_size": 32,
    "model.scan_layers": False,     # unrolled: 14-19 % shorter steps on a CPU at these depths
    "optimizer.warmup_steps": 50,   # capped at 10 % of the shortest run of a trunk
    "log_every_steps": 25,
    "eval_every_steps": 1000,
    "eval_examples": 512,
    "checkpoint_every_steps": 500,
    "eval.weights": ("raw", "ema"),   # finding 4: raw weights beside the post-hoc EMA
    "eval.raw_samples": 120,   # the raw weights on 120 of the 300 prompts (2 of 5 batches)
}


def overrides(paradigm: str, size: str, **extra) -> dict:
    """The study's settings with the tuned learning rate of (paradigm, size)."""
    lr = common.tuned_lr(paradigm, size, DEFAULT_LR)
    return {**OVERRIDES, "optimizer.lr": lr, **extra}


def sweep(add):
    for paradigm in PARADIGMS:
        for size in SIZES:
            add(paradigm=paradigm, size=size, budgets=BUDGETS[size], schedule="wsd_branches",
                overrides=overrides(paradigm, size))
        size, budget, seeds = SEEDS
        add(paradigm=paradigm, size=size, budget=budget, seeds=seeds,
            overrides=overrides(paradigm, size, **{"optimizer.schedule": "wsd"}))
        size, budget = COSINE_CONTROL
        add(paradigm=paradigm, size=size, budget=budget, ablation={"schedule": "cosine"},
            overrides=overrides(paradigm, size, **{"optimizer.schedule": "cosine"}))
