"""Paradigm plug-ins: initial losses, samplers (cache equivalence, schedules, determinism), FLOPs,
factorised token heads."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, flops, registry
from imgsynth.models import autoencoder as ae
from imgsynth.paradigms import ar, base, flow, maskgit, token_model


def tiny(paradigm, **sampler):
    c = config_lib.default_config(paradigm, "size=T")
    c.autoencoder.kind, c.autoencoder.lfq_bits, c.autoencoder.factors = "lfq", 6, 1
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
    a.autoencoder.factors = 2       # heads of 8 + 8 codes instead of 64
    cfg = base.backbone_config(a, causal=True)
    expected = (flops.cached_decode_flops(cfg, 64, 16) + 2 * a.model.width * 16 * 64
                + base.text_costs(a)["text_encoder"].fwd_flops)
    assert ar.inference_flops(a) == expected
    # Next-token decoding with a cache is far cheaper than MaskGIT's 12 full passes.
    assert ar.inference_flops(a) < maskgit.inference_flops(m) / 4


@pytest.mark.parametrize("paradigm", ["maskgit", "ar"])
@pytest.mark.parametrize("codebook", [{}, {"kind": "lfq", "lfq_bits": 16, "factors": 2},
                                      {"kind": "fsq", "fsq_levels": (8, 8, 8, 5, 5, 5), "factors": 3}])
def test_token_param_count_matches_model(paradigm, codebook):
    for size in ("T", "XL"):
        c = config_lib.default_config(paradigm, f"size={size}")
        c.autoencoder.update(codebook)
        module = registry.paradigm_module(c)
        state = nnx.state(nnx.eval_shape(lambda: module.build(c, nnx.Rngs(0))), nnx.Param)
        assert sum(x.size for x in jax.tree.leaves(state)) == module.model_cost(c).params_total


def _perturbed(model, scale=0.05):
    """Non-zero heads and trained-looking weights, so logits are not trivially equal."""
    for i, (_, p) in enumerate(nnx.to_flat_state(nnx.state(model, nnx.Param))):
        p.set_value(p.get_value() + scale * jax.random.normal(jax.random.key(i), p.get_value().shape))
    return model


def test_factorised_head_with_one_factor_is_the_flat_head():
    """K = 1: one (V+1)-row embedding and a [d, V] head, and the same logits as the flat network."""
    c = tiny("maskgit")
    model = _perturbed(maskgit.build(c, nnx.Rngs(0)))
    assert model.sizes == (64,) and model.embed.embedding.shape == (65, c.model.width)
    assert model.head.kernel.shape == (c.model.width, 64)
    ids, mask = captions(c, 2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 65, (2, 64)), jnp.int32)  # 64 = mask
    x = model.embed.embedding[...][tokens] + model.positions()[None]
    h, _ = model.backbone(x, ctx_BSD=model.text(ids, mask), ctx_mask_BS=mask)
    flat = h @ model.head.kernel[...] + model.head.bias[...]
    np.testing.assert_allclose(model(tokens, ids, mask), flat, atol=1e-5)


def test_factorised_loss_and_draw_are_the_flat_ones_of_the_product_distribution():
    """K heads define p(v) = Π_j p_j(f_j(v)): the summed factor cross-entropy and the joint
    log-probability of a draw equal the flat ones of the outer-sum logits."""
    sizes = (8, 4, 2)
    logits = jax.random.normal(jax.random.key(0), (3, 5, sum(sizes)))
    parts = token_model.split_logits(logits, sizes)
    f = ae.indices_to_factors(jnp.arange(64), sizes)                      # [64, 3]
    flat = sum(jax.nn.log_softmax(p)[..., f[:, j]] for j, p in enumerate(parts))   # [3, 5, 64]
    targets = jnp.asarray(np.random.default_rng(1).integers(0, 64, (3, 5)), jnp.int32)
    np.testing.assert_allclose(token_model.cross_entropy(logits, targets, sizes),
                               token_model.cross_entropy(flat, targets, (64,)), atol=1e-5)
    token, logp = token_model.draw(logits, jax.random.key(2), sizes)
    assert token.shape == (3, 5) and int(token.max()) < 64
    np.testing.assert_allclose(logp, jnp.take_along_axis(flat, token[..., None], -1)[..., 0], atol=1e-5)
    # Per-factor transforms (temperature, top-k) apply to each factor: top-1 gives the argmaxes.
    greedy, _ = token_model.draw(logits[:, 0], jax.random.key(3), sizes,     # [B, Σ V_j] as in ar
                                 lambda l: ar.filter_logits(l, 1, 1.0))
    np.testing.assert_array_equal(
        greedy, ae.factors_to_indices(jnp.stack([p[:, 0].argmax(-1) for p in parts], -1), sizes))


@pytest.mark.parametrize("paradigm", ["maskgit", "ar"])
def test_factorised_head_flops_are_twice_its_parameters_per_token(paradigm):
    c = tiny(paradigm)
    c.autoencoder.kind, c.autoencoder.fsq_levels, c.autoencoder.factors = "fsq", (8, 8, 8, 5, 5, 5), 2
    model = nnx.eval_shape(lambda: registry.paradigm_module(c).build(c, nnx.Rngs(0)))
    assert model.sizes == (512, 125) and model.vocab == 64000
    heads = token_model.model_cost(c, causal=paradigm == "ar").components["heads"]
    assert heads.fwd_flops == 2 * model.head.kernel.size * 64
    assert heads.embedding_params == model.embed.embedding.size == (512 + 125 + 2) * c.model.width
    assert heads.params == model.head.kernel.size + model.head.bias.size


@pytest.mark.parametrize("bad,match", [
    ({"kind": "lfq", "lfq_bits": 16, "factors": 3}, "factors=3 must be a positive integer"),
    ({"kind": "fsq", "fsq_levels": (8, 1, 5)}, "fsq_levels"),
    ({"kind": "kl"}, "need a discrete autoencoder")])
def test_bad_codebook_configs_fail_before_building(bad, match):
    c = tiny("ar")
    c.autoencoder.update(bad)
    with pytest.raises(ValueError, match=match):
        ar.model_cost(c)
    with pytest.raises(ValueError, match=match):
        nnx.eval_shape(lambda: ar.build(c, nnx.Rngs(0)))


def test_tokens_of_another_codebook_are_refused():
    c = tiny("maskgit")
    info = {"kind": "lfq", "config": {"autoencoder": {"kind": "lfq", "lfq_bits": 6, "fsq_levels": (8,)}}}
    token_model.check_tokenizer(c, info)
    info["config"]["autoencoder"]["lfq_bits"] = 10
    with pytest.raises(ValueError, match=r"tokenizer with .*'levels': \(2, 2, 2, 2, 2, 2, 2, 2, 2, 2\)"):
        token_model.check_tokenizer(c, info)
    with pytest.raises(ValueError, match="'kind': 'fsq'"):
        token_model.check_tokenizer(c, {"kind": "fsq", "config": {"autoencoder": {"fsq_levels": [4, 4, 4]}}})
