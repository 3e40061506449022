"""The continuous-token paradigms (ar_continuous, mar) and their per-token flow-matching head:
loss at initialisation, samplers (cache equivalence, K-step filling), FLOPs against parameter
counts and XLA, bad configs, and the whole pipeline on tiny data."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from imgsynth import config as config_lib, evaluate, flops, registry, stages, train
from imgsynth.models import token_head
from imgsynth.paradigms import ar_continuous, base, latent_tokens, mar, maskgit
from test_paradigms import _perturbed as perturbed, captions

MODULES = {"ar_continuous": ar_continuous, "mar": mar}


def tiny(paradigm, **sampler):
    c = config_lib.default_config(paradigm, "size=T")
    c.head.depth, c.sampler.head_steps = 2, 3
    for k, v in sampler.items():
        c.sampler[k] = v
    return c


@pytest.mark.parametrize("paradigm", list(MODULES))
def test_head_loss_at_init_is_the_velocity_targets_second_moment(paradigm):
    """The head starts as the zero velocity, so its loss is E[(ε − x₀)²] = 1 + E[x₀²]."""
    c = tiny(paradigm)
    module = MODULES[paradigm]
    model = module.build(c, nnx.Rngs(0))
    batch = jax.tree.map(jnp.asarray, module.example_batch(c, 8, np.random.default_rng(1)))
    batch["latents"] = 2.0 * batch["latents"]            # E[x₀²] = 4: not the noise's moment
    value, _ = module.loss(model, batch, jax.random.key(0), c)
    analytic = 1.0 + float(jnp.mean(batch["latents"] ** 2))
    # 8 × 64 tokens × 4 times × 4 channels: the standard error of the mean is ~0.05 here.
    assert abs(float(value) - analytic) < 0.25, (float(value), analytic)
    z = jnp.ones((5, c.model.width))
    v = model.head(jnp.ones((5, 4)), jnp.full((5,), 0.5), model.head.condition(z))
    np.testing.assert_array_equal(v, 0.0)


def test_head_loss_draws_time_steps_per_token_and_learns_a_constant_velocity():
    """With k times per token the loss averages k draws; a head fitted to one token's velocity
    drives the loss far below its initial value."""
    head = token_head.TokenHead(2, 8, 16, 2, rngs=nnx.Rngs(0), dtype=jnp.float32)
    x0, z = jnp.zeros((64, 2)), jnp.ones((64, 8))
    per_token = token_head.loss(head, x0, z, jax.random.key(0), time_steps=4)
    assert per_token.shape == (64,)
    opt = nnx.Optimizer(head, __import__("optax").adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(head, opt, key):
        def f(h):
            return jnp.mean(token_head.loss(h, x0 + 3.0, z, key, 4))
        value, grads = nnx.value_and_grad(f)(head)
        opt.update(head, grads)
        return value
    first = float(step(head, opt, jax.random.key(1)))
    for i in range(200):
        last = float(step(head, opt, jax.random.key(i + 2)))
    assert first > 9.0 and last < 0.3 * first, (first, last)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_ar_continuous_cached_and_uncached_give_the_same_latents(method):
    c = tiny("ar_continuous", guidance=1.5, temperature=0.8, head_method=method)
    model = perturbed(ar_continuous.build(c, nnx.Rngs(0)))
    ids, mask = captions(c)
    cached = nnx.jit(lambda m, i, k, r: ar_continuous.sample(m, i, k, r, c))
    uncached = nnx.jit(lambda m, i, k, r: ar_continuous.sample_uncached(m, i, k, r, c))
    x1 = cached(model, ids, mask, jax.random.key(1))
    x2 = uncached(model, ids, mask, jax.random.key(1))
    assert x1.shape == (3, 8, 8, 4) and np.isfinite(x1).all()
    np.testing.assert_allclose(x1, x2, atol=2e-4, rtol=2e-4)
    np.testing.assert_array_equal(x1, cached(model, ids, mask, jax.random.key(1)))
    assert np.abs(np.asarray(x1 - cached(model, ids, mask, jax.random.key(2)))).max() > 0.1


def test_head_sampler_at_init_returns_the_scaled_noise():
    """A zero velocity leaves the starting noise: the temperature scales it."""
    c = tiny("ar_continuous", guidance=1.0, temperature=0.5)
    model = ar_continuous.build(c, nnx.Rngs(0))
    ids, mask = captions(c, 2)
    run = nnx.jit(lambda m, i, k: ar_continuous.sample(m, i, k, jax.random.key(3), c))
    x = run(model, ids, mask)
    noise = jnp.stack([ar_continuous._noise(jax.random.key(3), t, 2, 4) for t in range(64)], 1)
    np.testing.assert_allclose(x.reshape(2, 64, 4), 0.5 * noise, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 5, 12])
def test_mar_fills_every_token_once_in_k_steps(steps):
    c = tiny("mar", steps=steps)
    model = perturbed(mar.build(c, nnx.Rngs(0)))
    ids, mask = captions(c)
    run = nnx.jit(lambda m, i, k, r: mar.sample(m, i, k, r, c, return_history=True))
    x, history = run(model, ids, mask, jax.random.key(0))
    filled = np.cumsum(mar.fill_counts(64, steps))     # MaskGIT's cosine counts, ≥ 1 a step
    np.testing.assert_array_equal(filled, 64 - np.asarray(maskgit.masked_counts(64, steps)))
    assert filled[-1] == 64 and (np.diff(np.concatenate([[0], filled])) > 0).all()
    np.testing.assert_array_equal(history, np.repeat(filled[:, None], 3, axis=1))
    assert x.shape == (3, 8, 8, 4) and np.isfinite(x).all() and (np.abs(x) > 0).all()
    again, _ = run(model, ids, mask, jax.random.key(0))
    np.testing.assert_array_equal(x, again)
    other, _ = run(model, ids, mask, jax.random.key(1))
    assert (np.asarray(other) != np.asarray(x)).any()


@pytest.mark.parametrize("paradigm", list(MODULES))
def test_param_count_matches_model(paradigm):
    for size in ("T", "XL"):
        c = config_lib.default_config(paradigm, f"size={size}")
        module = registry.paradigm_module(c)
        state = nnx.state(nnx.eval_shape(lambda: module.build(c, nnx.Rngs(0))), nnx.Param)
        assert sum(x.size for x in jax.tree.leaves(state)) == module.model_cost(c).params_total


def test_head_flops_are_twice_its_weights_per_evaluation():
    c = tiny("mar")
    head = nnx.eval_shape(lambda: mar.build(c, nnx.Rngs(0))).head
    condition, evaluation = latent_tokens.head_costs(c)
    kernels = {"/".join(map(str, k)): v.get_value().size
               for k, v in nnx.to_flat_state(nnx.state(head, nnx.Param)) if k[-1] == "kernel"}
    assert condition.fwd_flops == 2 * kernels["cond_in/kernel"]
    assert evaluation.fwd_flops == 2 * (sum(kernels.values()) - kernels["cond_in/kernel"])
    cost = mar.model_cost(c)
    assert cost.components["token_head"].fwd_flops == 64 * (condition.fwd_flops
                                                            + 4 * evaluation.fwd_flops)


@pytest.mark.parametrize("paradigm", list(MODULES))
def test_training_forward_flops_match_xla(paradigm):
    """The backbone and the head at `time_steps` evaluations per token, against XLA's count of
    the unrolled model's loss (elementwise work and random draws add a few percent)."""
    c = tiny(paradigm)
    c.model.scan_layers = False
    module = MODULES[paradigm]
    model = module.build(c, nnx.Rngs(0))
    B = 2
    batch = jax.tree.map(jnp.asarray, module.example_batch(c, B, np.random.default_rng(0)))
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, b: module.loss(nnx.merge(graphdef, s), b, jax.random.key(0), c)[0])
    xla = fn.lower(state, batch).compile().cost_analysis()["flops"] / B
    analytic = module.model_cost(c).fwd_flops_per_example
    assert abs(xla / analytic - 1) < 0.08, (xla, analytic)


def test_inference_flops_accounting():
    a = tiny("ar_continuous", guidance=1.0, head_steps=5, head_method="euler")
    cost = ar_continuous.model_cost(a)
    condition, evaluation = latent_tokens.head_costs(a)
    cfg = base.backbone_config(a, causal=True)
    expected = (flops.cached_decode_flops(cfg, 64, 16) + cost.components["heads"].fwd_flops
                + 64 * (condition.fwd_flops + 5 * evaluation.fwd_flops)
                + cost.components["text_encoder"].fwd_flops)
    assert ar_continuous.inference_flops(a) == expected
    a.sampler.head_method, a.sampler.guidance = "heun", 3.0
    assert ar_continuous.inference_flops(a) == 2 * (
        expected + 64 * 5 * evaluation.fwd_flops)

    m = tiny("mar", steps=12, guidance=2.0, head_steps=5)
    mc = mar.model_cost(m)
    widest = max(mar.fill_counts(64, 12))
    assert widest == 8                    # the last step: floor(64·cos(11π/24)) tokens
    per_pass = mc.components["generator"].fwd_flops + mc.components["heads"].fwd_flops
    assert mar.inference_flops(m) == 2 * (
        12 * per_pass + 12 * widest * (condition.fwd_flops + 5 * evaluation.fwd_flops)
        + mc.components["text_encoder"].fwd_flops)


@pytest.mark.parametrize("paradigm", list(MODULES))
@pytest.mark.parametrize("bad,error,match", [
    ({"autoencoder.kind": "fsq"}, ValueError, r"needs the continuous autoencoder "
                                              r"\(autoencoder.kind='kl'\), got 'fsq'"),
    ({"head.time_steps": 0}, config_lib.ConfigError, "head.time_steps=0 must be at least 1"),
    ({"sampler.head_steps": 0}, config_lib.ConfigError, "sampler.head_steps=0 must be at least 1"),
    ({"sampler.head_method": "rk4"}, config_lib.ConfigError, "head_method='rk4'")])
def test_bad_configs_fail_before_building(paradigm, bad, error, match):
    c = config_lib.default_config(paradigm, "size=T,steps=10")
    for key, value in bad.items():
        section, name = key.split(".")
        c[section][name] = value
    with pytest.raises(error, match=match):
        registry.plan(c)
    with pytest.raises(error, match=match):
        nnx.eval_shape(lambda: MODULES[paradigm].build(c, nnx.Rngs(0)))


@pytest.mark.parametrize("paradigm", ["maskgit", "ar"])
def test_discrete_paradigms_refuse_the_continuous_autoencoder(paradigm):
    c = config_lib.default_config(paradigm, "size=T,steps=10")
    c.autoencoder.kind = "kl"
    with pytest.raises(ValueError, match="need a discrete autoencoder"):
        registry.plan(c)


def test_square_grid_has_every_corner_and_fits_the_hour():
    from launch import grid as grid_lib
    sq = grid_lib.load("square")
    evaluated = [r for r in sq.runs if r.evaluate]
    assert {r.paradigm for r in evaluated} == set(registry.PARADIGMS)
    for paradigm in registry.PARADIGMS:
        mine = {(r.size, r.budget) for r in evaluated if r.paradigm == paradigm}
        assert mine == {("T", 1e12), ("T", 3.2e12), ("XS", 1e12), ("XS", 3.2e12), ("XS", 1e13)}
        assert {r.role for r in sq.runs if r.paradigm == paradigm} == {"trunk", "branch"}
    # The sequential estimate from an empty cache (README, "The square").
    assert sum(grid_lib.estimate_seconds(r) for r in sq.runs) <= 60 * 60


@pytest.mark.slow
@pytest.mark.parametrize("paradigm", list(MODULES))
def test_continuous_paradigms_end_to_end(stage_cache, tmp_path, paradigm):
    c = config_lib.default_config(paradigm, "runlocal,steps=4,global_batch_size=16")
    c.cache_dir = stage_cache
    c.data.builder_config = "r32_tiny"
    c.autoencoder.train_steps = 20
    c.instruments.judge_steps = c.instruments.alignment_steps = 20
    c.eval_examples, c.eval_every_steps, c.checkpoint_every_steps = 32, 2, 2
    c.log_every_steps, c.peak_flops_per_s = 2, 1e11
    c.sampler.head_steps = 2
    c.eval.weights = ("ema",)
    row = train.train(c, str(tmp_path))
    assert json.load(open(tmp_path / "status.json"))["status"] == "done"
    assert np.isfinite(row["eval/loss_ema"])
    stages.prepare(c)
    report = evaluate.evaluate(str(tmp_path), num_samples=8)
    m = report["weights"]["ema"]
    assert {"prompt_following", "fd_judge", "eval_loss"} <= set(m)
    assert report["inference"]["flops_per_image"] == MODULES[paradigm].inference_flops(c)
