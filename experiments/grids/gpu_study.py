"""The study on one GPU: 3 paradigms x 3 sizes (S, M, L) on the full r32 shapes data, one trunk per
(paradigm, size) with two cooldown branches, budgets 1e14-5e15 FLOPs, in one call of 6 minutes.

    PYTHON=python3 benchmarks/device_run.sh --out=DIR     (data, stages, this grid, evaluation,
                                                           report; `--plan` prints the estimate)
    python -m launch --grid=experiments/grids/gpu_study.py --workdir=./gpu_study --parallel=8

32 px images with the shipped f = 4 autoencoders (KL for flow matching, FSQ for the token
paradigms), judge and alignment model: 64 image tokens per example, global batch 256, bfloat16
matmuls (float32 parameters). Per (paradigm, size) one trunk trains at constant rate and each
budget is a cooldown branch of it (the last 20 % of its steps decay to the floor), as in
cpu_study. The top budget is L's (5e15, ~1,030 steps, 2.6 epochs): L's wider matmuls use the GPU
best, while S and M are bound by the input pipeline (~8,000 images/s a process: S at 3e14 is
838 steps). 3e14 has S and M, 1e15 M and L. A Chinchilla-like N ~ sqrt(C / 120) puts the
compute-optimal size at 1-6.5M parameters over these budgets (S is 4.8-6.0M, M 10-14M, L
61-80M). `benchmarks/device_run.sh --plan` estimates the call at ~359 s on one GPU (8 runs at a
time); L at 1e16 instead (424 s) or a third branch per size (487 s) does not fit 360 s.
Learning rates: S's are the lr_sweep's (batch 32, CPU); M and L's are untuned.

`REHEARSAL` is the same design at size T on r32_tiny for a CPU (`device_run.sh --rehearse`).
"""
from experiments import common

PARADIGMS = ("flow", "maskgit", "ar")
BUDGETS = {"S": (1e14, 3e14), "M": (3e14, 1e15), "L": (1e15, 5e15)}
DEFAULT_LR = 1e-3          # where tuned_lr.json has no entry (M, L)
TUNED_LR_FILE = common.TUNED_LR_FILE

OVERRIDES = {
    "global_batch_size": 256,
    "model.dtype": "bfloat16",
    # 8 runs share one GPU, 0.9/8 of its memory each (9 GB on an H100): L's update step at batch
    # 256 asks 22.2 GiB without rematerialisation, 3.3 GiB with it (M 1.1 GiB; `--compile_only`,
    # CPU layouts). S and M wait on their input pipeline, so its recomputation costs L alone.
    # `full`, not `auto`: auto's choice costs up to four more compilations per process.
    "model.remat": "full",
    "optimizer.warmup_steps": 50,    # capped at 10 % of the shortest run of a trunk
    "log_every_steps": 25,
    "eval_every_steps": 100_000,     # no evaluation inside training: each branch's final one
    "eval_examples": 512,
    "checkpoint_every_steps": 100_000,   # trunks keep their fork points; SIGTERM checkpoints
    "eval.weights": ("ema",),
    "eval.num_samples": 300,
    # The post-hoc EMA chooses between the two tracked profiles: their last snapshots, read
    # alone (rebuilding other widths reads every snapshot, an L branch's ~10 GB: ~13 s at the
    # 0.8 GB/s orbax restores; `python -m imgsynth.ema` rebuilds any width after the call).
    "ema.candidates": (0.05, 0.10),
}

# The rehearsal on a CPU: size T on r32_tiny (the shipped instruments serve every r32 variant;
# its 384 images are built and encoded in seconds), a trunk and one tiny branch per paradigm
# (each process costs tens of seconds of start-up and compilation on a CPU).
REHEARSAL = {"T": (6e10,)}
REHEARSAL_OVERRIDES = {**OVERRIDES, "data.builder_config": "r32_tiny",
                       "global_batch_size": 16, "model.dtype": "float32", "model.remat": "none",
                       "optimizer.warmup_steps": 2, "log_every_steps": 5, "eval_examples": 32,
                       "eval.num_samples": 24}   # r32_tiny's test split: 4 of its rarest category


def overrides(paradigm: str, size: str, rehearse: bool = False) -> dict:
    """The study's settings with the tuned learning rate of (paradigm, size) where one exists."""
    base = REHEARSAL_OVERRIDES if rehearse else OVERRIDES
    return {**base, "optimizer.lr": common.tuned_lr(paradigm, size, DEFAULT_LR)}


def sweep(add, rehearse: bool = False):
    for paradigm in PARADIGMS:
        for size, budgets in (REHEARSAL if rehearse else BUDGETS).items():
            add(paradigm=paradigm, size=size, budgets=budgets, schedule="wsd_branches",
                runlocal=rehearse, overrides=overrides(paradigm, size, rehearse))
