"""Paper scale: sizes L…3XL, budgets 1e17–1e20 training FLOPs, for TPU pods or GPU clusters.

    python -m launch --grid=experiments/grids/paper.py --backend=tpu --tpu_name=NAME --zone=Z \
        --workdir=/mnt/shared/paper --dry_run

An isoFLOP design: each size is trained at the 4-5 budgets around its compute-optimal point (a
Chinchilla-like N ≈ sqrt(C / 120), i.e. ~20 tokens per parameter), not at every budget, so no run
is absurdly short or long and every budget has 2-4 sizes. 64 px images with f = 4 autoencoders
give 256 image tokens per example; global batch 256 in bfloat16 with rematerialisation; L and XL
data-parallel, XXL and 3XL fully sharded (FSDP). The largest budgets need far more than the
100k-image default split: build a larger shapes split or point `data.*` at a real dataset. Check
memory before paying for a pod:
`python -m launch --grid=experiments/grids/paper.py --compile_only --fake_devices=64`.
"""

PARADIGMS = ("flow", "maskgit", "ar")
BUDGETS = {
    "L": (1e17, 3e17, 1e18, 3e18),
    "XL": (3e17, 1e18, 3e18, 1e19, 3e19),
    "XXL": (1e18, 3e18, 1e19, 3e19, 1e20),
    "3XL": (3e18, 1e19, 3e19, 1e20),
}
MESH = {"L": (-1, 1, 1), "XL": (-1, 1, 1), "XXL": (1, -1, 1), "3XL": (1, -1, 1)}

COMMON = {
    "global_batch_size": 256,
    "model.dtype": "bfloat16",
    "model.remat": "full",
    "data.resolution": 64,
    "data.builder_config": "r64",
    "optimizer.warmup_steps": 1000,
    "log_every_steps": 100,
    "eval_every_steps": 5000,
    "eval_examples": 4096,
    "checkpoint_every_steps": 2000,
}


def sweep(add):
    for paradigm in PARADIGMS:
        for size, budgets in BUDGETS.items():
            for budget in budgets:
                add(paradigm=paradigm, size=size, budget=budget,
                    overrides={**COMMON, "mesh": MESH[size]})
