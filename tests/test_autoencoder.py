"""Autoencoders: shapes for every downsampling factor, LFQ bit order, FSQ levels, index ↔ factors
↔ codes round trips, KL statistics, losses."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from imgsynth.models import autoencoder as ae, layers

MULT = {2: (1, 1), 4: (1, 1, 2), 8: (1, 1, 2, 2), 16: (1, 1, 1, 2, 2)}


def tiny(kind="kl", downsample=4, **overrides):
    kwargs = dict(kind=kind, downsample=downsample, channels=8, channel_mult=MULT.get(downsample, (1,)),
                  num_res_blocks=1, patch_size=1, latent_channels=3, lfq_bits=5,
                  kl_weight=1e-3, entropy_weight=0.1, commit_weight=0.25, lfq_temperature=0.1,
                  recon_loss="l1")
    kwargs.update(overrides)
    return ae.Autoencoder(**kwargs, rngs=nnx.Rngs(0))


def images(n=2, size=16, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("downsample", [2, 4, 8, 16])
def test_encode_decode_shapes_for_every_factor(downsample):
    # Abstract models and evaluation: only shapes are traced, nothing is computed.
    kl = nnx.eval_shape(lambda: tiny("kl", downsample))
    lfq = nnx.eval_shape(lambda: tiny("lfq", downsample))
    roundtrip = lambda model, x: (model.encode(x), model.decode(model.encode(x)))  # noqa: E731
    for size in (16, 32, 64):
        h = size // downsample
        x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        z, y = nnx.eval_shape(roundtrip, kl, x)
        assert z.shape == (2, h, h, 3) and y.shape == x.shape
        assert kl.latent_shape(size) == (h, h, 3)
        z, y = nnx.eval_shape(roundtrip, lfq, x)
        assert z.shape == (2, h, h) and z.dtype == jnp.int32 and y.shape == x.shape
        assert lfq.latent_shape(size) == (h, h, 5)


def test_encode_decode_values():
    x = images(2, 16)
    for kind in ae.KINDS:
        model = tiny(kind, 4, patch_size=2, channel_mult=(1, 2))
        z = model.encode(x)
        assert z.shape == ((2, 4, 4, 3) if kind == "kl" else (2, 4, 4))
        y = model.decode(z)
        assert y.shape == x.shape and float(jnp.max(jnp.abs(y))) <= 1.0
    y = jnp.arange(2 * 8 * 8 * 3.0).reshape(2, 8, 8, 3)
    np.testing.assert_array_equal(layers.depth_to_space(layers.space_to_depth(y, 2), 2), y)
    assert layers.space_to_depth(y, 2)[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29]


def test_properties():
    kl = nnx.eval_shape(lambda: tiny("kl"))
    lfq = nnx.eval_shape(lambda: tiny("lfq", lfq_bits=6))
    assert (kl.kind, kl.codebook_size) == ("kl", None)
    assert (lfq.kind, lfq.codebook_size) == ("lfq", 64)


def test_bad_input_and_config_errors():
    model = tiny("kl", 8)
    with pytest.raises(ValueError, match="not divisible by the autoencoder's downsampling factor 8"):
        model.encode(images(1, 20))
    with pytest.raises(ValueError, match="not divisible"):
        model.latent_shape(36)
    with pytest.raises(ValueError, match=r"shape \(B, H, W, 3\)"):
        model.encode(jnp.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="decode expects latents"):
        model.decode(jnp.zeros((1, 2, 2, 7)))
    with pytest.raises(ValueError, match="defined for the discrete kinds"):
        model.indices_to_codes(jnp.zeros((1, 2, 2), jnp.int32))
    with pytest.raises(ValueError, match="needs 3"):
        tiny("kl", 4, channel_mult=(1, 2))
    with pytest.raises(ValueError, match="downsample must be one of"):
        tiny("kl", 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        tiny("vq")
    with pytest.raises(ValueError, match="patch_size must be a power of 2"):
        tiny("kl", 4, patch_size=3)
    with pytest.raises(ValueError, match="lacks"):
        ae.build_autoencoder({"kind": "kl"}, nnx.Rngs(0))


def test_lfq_bit_order_and_round_trip():
    bits = 10
    idx = jnp.arange(2 ** bits)
    codes = ae.indices_to_codes(idx, bits)
    assert codes.shape == (1024, 10) and set(np.unique(codes).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(ae.codes_to_indices(codes), idx)
    # Channel 0 is the most significant bit; +1 means 1.
    np.testing.assert_array_equal(codes[1], [-1] * 9 + [1])
    np.testing.assert_array_equal(codes[512], [1] + [-1] * 9)
    # Any sign pattern maps to the index of its quantised code (0 counts as -1 only below zero).
    z = jax.random.normal(jax.random.key(0), (4, 3, bits))
    np.testing.assert_array_equal(ae.indices_to_codes(ae.codes_to_indices(z), bits),
                                  jnp.where(z > 0, 1.0, -1.0))


def test_lfq_straight_through_gradient():
    z = jnp.array([-0.3, 0.0, 0.7, -2.0])
    w = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(ae.lfq_quantize(z), [-1.0, -1.0, 1.0, -1.0])
    np.testing.assert_allclose(jax.grad(lambda z: jnp.sum(ae.lfq_quantize(z) * w))(z), w)


def _full_softmax(z, temperature):
    bits = z.shape[-1]
    codes = ae.indices_to_codes(jnp.arange(2 ** bits), bits)
    dist = jnp.sum(jnp.square(z[:, None, :] - codes[None]), axis=-1)
    return jax.nn.softmax(-dist / temperature, axis=-1)


def test_lfq_entropies_match_the_full_softmax():
    z = 0.3 * jax.random.normal(jax.random.key(1), (64, 4))
    probs = _full_softmax(z, 0.5)
    per_sample, codebook = ae.lfq_entropies(z, 0.5)
    np.testing.assert_allclose(per_sample, jnp.mean(ae._entropy(probs)), rtol=1e-5)
    np.testing.assert_allclose(codebook, ae._entropy(jnp.mean(probs, 0)), rtol=1e-5)
    # Above FULL_ENTROPY_MAX_BITS the codebook term is the per-bit upper bound.
    z = 0.3 * jax.random.normal(jax.random.key(2), (64, ae.FULL_ENTROPY_MAX_BITS + 1))
    _, factorised = ae.lfq_entropies(z, 0.5)
    probs = jax.nn.sigmoid(4 * z / 0.5).mean(0)
    expected = -jnp.sum(probs * jnp.log(probs) + (1 - probs) * jnp.log(1 - probs))
    np.testing.assert_allclose(factorised, expected, rtol=1e-5)


def test_code_usage():
    stats = ae.code_usage(np.array([[0, 0], [1, 1]]), 4)
    assert stats["code_usage"] == 0.5
    assert stats["perplexity"] == pytest.approx(2.0)


def test_kl_sampling_statistics():
    mean = jnp.array([0.0, 1.5, -2.0])
    logvar = jnp.array([0.0, -1.0, 1.0])
    keys = jax.random.split(jax.random.key(0), 20_000)
    samples = jax.vmap(lambda k: ae.gaussian_sample(mean, logvar, k))(keys)
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(samples.var(0), jnp.exp(logvar), rtol=0.05)
    assert float(ae.gaussian_kl(jnp.zeros(5), jnp.zeros(5))) == 0.0
    # Closed form 0.5 (μ² + σ² − 1 − log σ²), averaged over elements.
    np.testing.assert_allclose(ae.gaussian_kl(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])),
                               0.5 * (0.5 + 0.5 * (np.e - 2.0)), rtol=1e-6)


def test_kl_scale_factor():
    model = tiny("kl")
    batches = [images(4, 16, s) for s in range(2)]
    scale = model.fit_scale_factor(batches)
    z = jnp.concatenate([model.encode(b) for b in batches])
    np.testing.assert_allclose(scale, 1.0 / float(np.std(np.asarray(z, np.float64))), rtol=1e-4)
    x = batches[0]
    np.testing.assert_allclose(model.encode_latents(x), model.encode(x) * scale, rtol=1e-6)
    np.testing.assert_allclose(model.decode_latents(model.encode_latents(x)),
                               model.decode(model.encode(x)), atol=1e-5)


@pytest.mark.parametrize("kind,recon", [("kl", "l1"), ("lfq", "l2"), ("fsq", "l2")])
def test_losses_finite_and_decreasing(kind, recon):
    model = tiny(kind, 4, recon_loss=recon)
    x = images(4, 16)
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, rng):
        (loss, aux), grads = nnx.value_and_grad(lambda m: m.loss(x, rng), has_aux=True)(model)
        optimizer.update(model, grads)
        return aux

    auxes = [step(model, optimizer, jax.random.key(i)) for i in range(25)]
    for aux in auxes:
        assert all(np.isfinite(float(v)) for v in aux.values())
    expected = {"loss", "recon", "mse", "psnr"} | {
        "kl": {"kl"}, "lfq": {"commit", "per_sample_entropy", "codebook_entropy"}, "fsq": set()}[kind]
    assert set(auxes[0]) == expected
    first, last = np.mean([a["recon"] for a in auxes[:3]]), np.mean([a["recon"] for a in auxes[-3:]])
    assert last < 0.8 * first


@pytest.mark.parametrize("kind", ae.KINDS)
def test_experiment_config_builds(kind):
    from experiments import autoencoder as config_file
    config = config_file.get_config(f"kind={kind},runlocal")
    model = nnx.eval_shape(lambda: ae.build_autoencoder(config.autoencoder, nnx.Rngs(0)))
    assert model.kind == kind and model.latent_shape(config.data.resolution) == (
        8, 8, {"kl": 4, "lfq": 6, "fsq": 3}[kind])
    assert model.codebook_size == {"kl": None, "lfq": 64, "fsq": 64}[kind]
    full = config_file.get_config(f"kind={kind}")
    assert (full.autoencoder.downsample, full.data.resolution, full.data.name) == (4, 32, "shapes")
    with pytest.raises(ValueError, match="kind must be"):
        config_file.get_config("kind=vq")


LEVELS = (8, 8, 8, 5, 5, 5)


@pytest.mark.parametrize("levels", [LEVELS, (2,) * 16, (3, 2, 7)])
def test_indices_factors_codes_round_trip(levels):
    """index ↔ factors ↔ codes for LFQ (all levels 2) and FSQ, at every factor count that divides."""
    size = int(np.prod(levels))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, size, (5, 7)), jnp.int32)
    if set(levels) == {2}:
        codes = ae.indices_to_codes(idx, len(levels))
        assert set(np.unique(codes).tolist()) == {-1.0, 1.0}
        np.testing.assert_array_equal(ae.codes_to_indices(codes), idx)
    else:
        codes = ae.fsq_indices_to_codes(idx, levels)
        np.testing.assert_array_equal(ae.fsq_codes_to_indices(codes, levels), idx)
    for k in [k for k in range(1, len(levels) + 1) if len(levels) % k == 0]:
        sizes = ae.factor_sizes(levels, k)
        assert int(np.prod(sizes)) == size and len(sizes) == k
        f = ae.indices_to_factors(idx, sizes)
        assert f.shape == (5, 7, k) and bool(jnp.all(f < jnp.asarray(sizes)))
        np.testing.assert_array_equal(ae.factors_to_indices(f, sizes), idx)
        # A factor is the index of its contiguous group of code channels.
        w = len(levels) // k
        digits = ae.indices_to_digits(idx, levels)
        for j in range(k):
            np.testing.assert_array_equal(
                f[..., j], ae.digits_to_indices(digits[..., j * w:(j + 1) * w], levels[j * w:(j + 1) * w]))
    # LFQ: factors are the high and low bits.
    if levels == (2,) * 16:
        np.testing.assert_array_equal(ae.indices_to_factors(idx, (256, 256)),
                                      jnp.stack([idx // 256, idx % 256], -1))


def test_fsq_quantisation_uses_every_level_and_is_idempotent():
    z = jnp.linspace(-8.0, 8.0, 4001)[:, None] * jnp.ones(len(LEVELS))
    q = ae.fsq_quantize(z, LEVELS)
    digits = ae.indices_to_digits(ae.fsq_codes_to_indices(q, LEVELS), LEVELS)
    for k, level in enumerate(LEVELS):
        assert sorted(np.unique(digits[:, k]).tolist()) == list(range(level))
    assert float(jnp.max(jnp.abs(q))) <= 1.0
    # Codes are on the grid: projecting them onto the codebook again changes nothing, and z = 0
    # lands on the zero code.
    again = ae.fsq_indices_to_codes(ae.fsq_codes_to_indices(q, LEVELS), LEVELS)
    np.testing.assert_array_equal(again, q)
    np.testing.assert_array_equal(ae.fsq_quantize(jnp.zeros((1, 6)), LEVELS), jnp.zeros((1, 6)))
    # Straight-through: the gradient is that of the bound, non-zero everywhere.
    grad = jax.grad(lambda x: jnp.sum(ae.fsq_quantize(x, LEVELS)))(0.3 * jnp.ones((2, 6)))
    assert bool(jnp.all(grad > 0))


@pytest.mark.slow
def test_fsq_model_encodes_indices_and_decodes_codes():
    model = tiny("fsq", fsq_levels=LEVELS)
    assert model.codebook_size == 64000 and model.latent_shape(16) == (4, 4, 6)
    idx = model.encode(images())
    assert idx.dtype == jnp.int32 and int(idx.max()) < 64000
    np.testing.assert_allclose(model.decode(idx), model.decode(model.indices_to_codes(idx)), atol=1e-6)
    assert model.factor_sizes(2) == (512, 125)


@pytest.mark.parametrize("levels", [(8, 1, 5), (8, 2.5), (), ("8",), (True, 4), (2 ** 16, 2 ** 16)])
def test_bad_fsq_levels_are_config_errors(levels):
    with pytest.raises(ValueError, match="fsq_levels"):
        tiny("fsq", fsq_levels=levels)


def test_bad_factors_and_entropy_groups_are_config_errors():
    with pytest.raises(ValueError, match="factors=3 must be a positive integer dividing"):
        ae.factor_sizes((2,) * 16, 3)
    with pytest.raises(ValueError, match="factors"):
        ae.factor_sizes(LEVELS, 0)
    with pytest.raises(ValueError, match="too large for the full codebook-entropy"):
        tiny("lfq", lfq_bits=16, entropy_groups=1)
    with pytest.raises(ValueError, match="must divide lfq_bits"):
        tiny("lfq", lfq_bits=16, entropy_groups=3)
    assert tiny("lfq", lfq_bits=16).entropy_groups == 2      # automatic: the fewest groups ≤ 12 bits
    assert ae.entropy_groups_for(18) == 2 and ae.entropy_groups_for(12) == 1


def test_lfq_grouped_codebook_entropy_is_the_sum_over_sub_codebooks():
    z = 0.3 * jax.random.normal(jax.random.key(3), (64, 8))
    _, grouped = ae.lfq_entropies(z, 0.5, groups=2)
    expected = sum(ae._entropy(jnp.mean(_full_softmax(z[:, g:g + 4], 0.5), 0)) for g in (0, 4))
    np.testing.assert_allclose(grouped, expected, rtol=1e-5)
    _, full = ae.lfq_entropies(z, 0.5, groups=1)
    assert float(full) <= float(grouped) + 1e-5      # sub-codebook entropies bound the joint one
