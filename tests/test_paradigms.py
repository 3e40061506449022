"""Paradigm plug-ins: initial losses, samplers (cache equivalence, schedules, determinism), FLOPs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, flops, registry
from imgsynth.paradigms import ar, base, flow, maskgit


def tiny(paradigm, **sampler):
    c = config_lib.default_config(paradigm, "size=T")
    c.autoencoder.lfq_bits = 6
    for k, v in sampler.items():
        c.sampler[k] = v
    return c


def captions(c, n=3):
    b = base.example_captions(c, n, np.random.default_rng(0))
    return jnp.asarray(b["text_ids"]), jnp.asarray(b["text_mask"])


@pytest.mark.parametrize("module", [maskgit, ar])
def test_token_loss_at_init_is_log_codebook(module):
    c = tiny(module.__name__.split(".")[-1])
    model = module.build(c, nnx.Rngs(0))
    batch = module.example_batch(c, 4, np.random.default_rng(1))
    value, _ = module.loss(model, batch, jax.random.key(0), c)
    assert abs(float(value) - math.log(64)) < 1e-3


def test_ar_cached_and_uncached_give_the_same_logits():
    c = tiny("ar", guidance=1.5, temperature=0.8, top_k=20, top_p=0.9)
    model = ar.build(c, nnx.Rngs(0))
    # Non-zero head and trained-looking weights so the logits are not trivially equal.
    for _, p in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        p.set_value(p.get_value() + 0.05 * jax.random.normal(jax.random.key(7), p.get_value().shape))
    ids, mask = captions(c)
    cached = nnx.jit(lambda m, i, k: ar.sample(m, i, k, jax.random.key(1), c, return_logits=True))
    uncached = nnx.jit(lambda m, i, k: ar.sample_uncached(m, i, k, jax.random.key(1), c,
                                                          return_logits=True))
    t1, l1 = cached(model, ids, mask)
    t2, l2 = uncached(model, ids, mask)
    np.testing.assert_allclose(l1, l2, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(t1, t2)
    t3, _ = cached(model, ids, mask)                       # deterministic for a seed
    np.testing.assert_array_equal(t1, t3)
    assert t1.shape == (3, 8, 8) and int(t1.max()) < 64


def test_filter_logits_top_k_and_top_p():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(ar.filter_logits(logits, 2, 1.0)).sum() == 2
    assert np.isfinite(ar.filter_logits(logits, 0, 0.7)).sum() == 2     # 0.5 + 0.3 ≥ 0.7
    assert np.isfinite(ar.filter_logits(logits, 0, 0.1)).sum() == 1     # the top token stays


@pytest.mark.parametrize("steps", [1, 5, 12])
def test_maskgit_commits_every_token_once_in_k_steps(steps):
    c = tiny("maskgit", steps=steps)
    model = maskgit.build(c, nnx.Rngs(0))
    for _, p in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        p.set_value(p.get_value() + 0.05 * jax.random.normal(jax.random.key(3), p.get_value().shape))
    ids, mask = captions(c)
    run = nnx.jit(lambda m, i, k, r: maskgit.sample(m, i, k, r, c, return_history=True))
    tokens, history = run(model, ids, mask, jax.random.key(0))
    counts = np.asarray(history)                         # committed tokens after each step
    assert counts.shape == (steps, 3)
    assert (np.diff(counts, axis=0) > 0).all() and (counts[0] > 0).all()
    assert (counts[-1] == 64).all()
    np.testing.assert_array_equal(64 - counts[:, 0], maskgit.masked_counts(64, steps))
    assert int(tokens.max()) < 64 and int(tokens.min()) >= 0
    again, _ = run(model, ids, mask, jax.random.key(0))
    np.testing.assert_array_equal(tokens, again)
    other, _ = run(model, ids, mask, jax.random.key(1))
    assert (np.asarray(other) != np.asarray(tokens)).any()


def test_maskgit_schedule_is_cosine():
    counts = maskgit.masked_counts(64, 12)
    assert counts[-1] == 0 and all(a > b for a, b in zip([64] + counts, counts))
    assert counts[5] == math.floor(64 * math.cos(math.pi / 2 * 6 / 12))


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_flow_sampler_is_deterministic_and_integrates(method):
    c = tiny("flow", steps=4, method=method)
    model = flow.build(c, nnx.Rngs(0))
    ids, mask = captions(c)
    run = nnx.jit(lambda m, i, k, r: flow.sample(m, i, k, r, c))
    x = run(model, ids, mask, jax.random.key(0))
    assert x.shape == (3, 8, 8, 4)
    np.testing.assert_array_equal(x, run(model, ids, mask, jax.random.key(0)))
    # At init the output head is zero, so the velocity is zero and samples stay the noise.
    noise = jax.random.normal(jax.random.key(0), x.shape)
    np.testing.assert_allclose(x, noise, atol=1e-6)


def test_inference_flops_accounting():
    c = tiny("flow", steps=10, guidance=1.0, method="euler")
    cost = flow.model_cost(c)
    per_eval = cost.components["generator"].fwd_flops + cost.components["heads"].fwd_flops
    text = cost.components["text_encoder"].fwd_flops
    assert flow.inference_flops(c) == 10 * per_eval + text
    c.sampler.method, c.sampler.guidance = "heun", 3.0
    assert flow.inference_flops(c) == 2 * (20 * per_eval + text)

    m = tiny("maskgit", steps=12, guidance=2.0)
    mc = maskgit.model_cost(m)
    assert maskgit.inference_flops(m) == 2 * (12 * (mc.components["generator"].fwd_flops
                                                    + mc.components["heads"].fwd_flops)
                                              + mc.components["text_encoder"].fwd_flops)
    a = tiny("ar", guidance=1.0)
    cfg = base.backbone_config(a, causal=True)
    expected = (flops.cached_decode_flops(cfg, 64, 16) + 2 * a.model.width * 64 * 64
                + base.text_cost(a).fwd_flops)
    assert ar.inference_flops(a) == expected
    # Next-token decoding with a cache is far cheaper than MaskGIT's 12 full passes.
    assert ar.inference_flops(a) < maskgit.inference_flops(m) / 4


@pytest.mark.parametrize("paradigm", ["maskgit", "ar"])
def test_token_param_count_matches_model(paradigm):
    for size in ("T", "XL"):
        c = config_lib.default_config(paradigm, f"size={size}")
        module = registry.paradigm_module(c)
        state = nnx.state(nnx.eval_shape(lambda: module.build(c, nnx.Rngs(0))), nnx.Param)
        assert sum(x.size for x in jax.tree.leaves(state)) == module.model_cost(c).params_total
