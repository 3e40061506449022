"""Token paradigms on codebooks of ≥ 2^16 codes through factorised heads: train, evaluate, sample."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, registry, train
from imgsynth.paradigms import base

CODEBOOKS = {
    "maskgit": {"kind": "lfq", "lfq_bits": 16, "factors": 2},                     # 2 × 256
    "ar": {"kind": "fsq", "fsq_levels": (8, 8, 8, 8, 8, 8), "factors": 3},        # 3 × 64
}


def tiny(paradigm):
    c = config_lib.default_config(paradigm, "size=T,steps=2,global_batch_size=8")
    c.data.name, c.data.synthetic_examples = "synthetic", 64
    c.autoencoder.update(CODEBOOKS[paradigm])
    c.eval_examples, c.log_every_steps = 16, 1
    c.eval_every_steps = c.checkpoint_every_steps = 1000
    c.peak_flops_per_s = 1e11
    c.optimizer.warmup_steps = 2
    c.sampler.steps = 4 if paradigm == "maskgit" else 0
    return c


@pytest.mark.slow   # end to end: trains, evaluates and samples
@pytest.mark.parametrize("paradigm", sorted(CODEBOOKS))
def test_large_codebook_trains_evaluates_and_samples(paradigm, tmp_path):
    c = tiny(paradigm)
    module = registry.paradigm_module(c)
    row = train.train(c, str(tmp_path))
    vocab = 2 ** 16 if paradigm == "maskgit" else 8 ** 6
    assert vocab >= 2 ** 16
    # At initialisation (zero heads) every factor is uniform: log V nats, log2 V bits per token.
    assert row["train/loss"] == pytest.approx(math.log(vocab), rel=0.02)
    assert row["eval/bits_per_token"] == pytest.approx(row["eval/loss"] / math.log(2), rel=1e-5)
    assert row["eval/bits_per_token"] == pytest.approx(math.log2(vocab), rel=0.02)
    model = module.build(c, nnx.Rngs(0))
    b = base.example_captions(c, 2, np.random.default_rng(0))
    tokens = nnx.jit(lambda m, i, k: module.sample(m, i, k, jax.random.key(0), c))(
        model, jnp.asarray(b["text_ids"]), jnp.asarray(b["text_mask"]))
    assert tokens.shape == (2, 8, 8) and tokens.dtype == jnp.int32
    assert 0 <= int(tokens.min()) and int(tokens.max()) < vocab
    assert len(np.unique(np.asarray(tokens))) > 32     # uniform factors: spread over the codebook
