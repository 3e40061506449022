"""Quickstart: every paradigm at two tiny sizes and two budgets — the whole study in minutes.

    python -m launch --grid=experiments/grids/quickstart.py --workdir=./study   (or imgsynth-study)

12 runs on the small shapes split (`runlocal`: r32_small, global_batch_size 32). Training takes
about 8 minutes of a 2-core CPU (`--dry_run` prints the per-run estimate); data, autoencoders,
judge, evaluation and the report come on top.
"""

PARADIGMS = ("flow", "maskgit", "ar")
SIZES = ("T", "XS")
BUDGETS = (3e11, 1e12)   # training FLOPs; T: ~160 / 530 steps, XS: ~22 / 75 steps

OVERRIDES = {
    "eval_every_steps": 100,
    "checkpoint_every_steps": 250,
    # Minutes on a laptop: the judge and the autoencoders are the ones shipped with the package
    # (trained on all of r32; the judge reads r32_small at 0.99, the autoencoders'
    # reconstructions at 0.99 for KL and 0.97 for FSQ), the alignment model trains briefly.
    "instruments.alignment_steps": 300,
    "eval.weights": ("ema",),   # half the sampling; the EMA-vs-raw comparison is cpu_study's
}


def sweep(add):
    for paradigm in PARADIGMS:
        for size in SIZES:
            for budget in BUDGETS:
                add(paradigm=paradigm, size=size, budget=budget, runlocal=True,
                    overrides=OVERRIDES)
