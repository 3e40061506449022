"""Tokenizer ablation: MaskGIT and next-token prediction at a fixed budget on each discrete
tokenizer, so a token paradigm's result can be read against what its tokenizer allows.

    python -m launch --grid=experiments/grids/ablation_tokenizer.py --workdir=./cpu_study

Every tokenizer keeps the downsampling (f = 4, 64 image tokens at 32 px) and differs in its
quantiser and codebook: LFQ with 10 bits (MAGVIT-v2's quantiser, 1,024 codes) and 16 bits (65,536
codes, heads factorised 2 × 256), FSQ with levels [8, 5, 5, 5] (1,000 codes) and
[8, 8, 8, 5, 5, 5] (64,000 codes, heads 512 + 125). Each autoencoder is trained and its data
encoded once (its own stage key). Run in the workdir of `cpu_study`: every evaluation reports
the judge on that tokenizer's reconstructions (overall and per attribute) next to the run's own
prompt following, and the eval loss in bits per image token compares across codebooks.
"""
from experiments.grids import cpu_study

PARADIGMS = ("maskgit", "ar")
SIZE = "XS"
BUDGET = 3.2e12
TOKENIZERS = {
    "lfq10": {"autoencoder.kind": "lfq", "autoencoder.lfq_bits": 10, "autoencoder.factors": 1},
    "lfq16": {"autoencoder.kind": "lfq", "autoencoder.lfq_bits": 16, "autoencoder.factors": 2},
    "fsq8555": {"autoencoder.kind": "fsq", "autoencoder.fsq_levels": (8, 5, 5, 5),
                "autoencoder.factors": 1},
    "fsq888555": {"autoencoder.kind": "fsq", "autoencoder.fsq_levels": (8, 8, 8, 5, 5, 5),
                  "autoencoder.factors": 2},
}


def sweep(add):
    for paradigm in PARADIGMS:
        for label, tokenizer in TOKENIZERS.items():
            add(paradigm=paradigm, size=SIZE, budget=BUDGET,
                overrides=cpu_study.overrides(paradigm, SIZE, **tokenizer,
                                              **{"optimizer.schedule": "wsd"}),
                ablation={"tokenizer": label})
