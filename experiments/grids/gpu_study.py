"""A first study on one GPU: 3 paradigms x 3 sizes (M, L, XL), one budget per size up to 5e15.

    python -m launch --grid=experiments/grids/gpu_study.py --workdir=./gpu_study

64 px shapes images with f = 4 autoencoders give 256 image tokens per example, as in the paper
grid; global batch 128 in bfloat16 (float32 parameters). Each size is trained at the budget
that buys it ~200-600 steps (M 1e15, L 2e15, XL 5e15 training FLOPs), 2.4e16 FLOPs in all:
about 2 minutes of compute on an H100-class GPU at 200 TFLOP/s achieved, plus start-up and
compilation per run. `benchmarks/device_check.sh` trains these nine runs on synthetic records
(no data or autoencoder stages, no evaluation) as its last part; a full run here first builds
the r64 shapes data, the two autoencoders and the instruments.
"""

PARADIGMS = ("flow", "maskgit", "ar")
BUDGETS = {"M": 1e15, "L": 2e15, "XL": 5e15}

OVERRIDES = {
    "global_batch_size": 128,    # 3 runs share one GPU's memory in the device check
    "model.dtype": "bfloat16",
    "data.resolution": 64,
    "data.builder_config": "r64",
    "optimizer.warmup_steps": 20,
    "ema_decay": 0.99,           # runs are ~200-600 steps
    "log_every_steps": 10,
    "eval_every_steps": 1000,
    "eval_examples": 1024,
    "checkpoint_every_steps": 1000,
}


def sweep(add):
    for paradigm in PARADIGMS:
        for size, budget in BUDGETS.items():
            add(paradigm=paradigm, size=size, budget=budget, overrides=OVERRIDES)
