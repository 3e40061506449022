"""Quickstart: every paradigm at two budgets — the whole study, on a laptop, in minutes.

    python -m launch --grid=experiments/grids/quickstart.py --workdir=./study   (or imgsynth-study)

6 runs on the small shapes split (`runlocal`: r32_small, size T, global_batch_size 32): the three
paradigms at budgets 6.7x apart. One size only: at these budgets a larger size gets too few
steps to learn anything (XS: 22-150 steps), and every run pays tens of seconds of start-up and
evaluation, so the size axis (isoFLOP curves, compute-optimal sizes) is cpu_study's. The judge,
the alignment model and both autoencoders are the ones shipped with the package (trained on all
of r32), so nothing but the generators trains; `--dry_run` prints the per-run estimate.
Evaluation scores the post-hoc EMA only; cpu_study evaluates raw weights beside it, so finding 4
(EMA helps diffusion more than the token methods) is measured there, not here.
"""

PARADIGMS = ("flow", "maskgit", "ar")
SIZES = ("T",)
BUDGETS = (3e11, 2e12)   # training FLOPs; T: ~160 / 1,060 steps

OVERRIDES = {
    "eval_every_steps": 250,
    "checkpoint_every_steps": 500,
    "eval.weights": ("ema",),   # half the sampling; cpu_study measures EMA against raw weights
}


def sweep(add):
    for paradigm in PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                add(paradigm=paradigm, size=size, budget=budget, runlocal=True,
                    overrides=OVERRIDES)
