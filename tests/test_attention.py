"""Attention through `jax.nn.dot_product_attention`: equal to the two-einsum reference it replaced
(training, causal, padded cross-attention, cached decoding), masks that hide what they must, and
the kernel choice per device."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from imgsynth.data.tokenizer import ByteTokenizer
from imgsynth.models import transformer
from imgsynth.models.transformer import Transformer, TransformerConfig
from imgsynth.paradigms import base

B, T, S, D = 3, 12, 7, 32
REAL_ATTENTION = jax.nn.dot_product_attention


def einsum_attention(query, key, value, bias=None, mask=None, *, is_causal=False,
                     key_value_seq_lengths=None, implementation=None):
    """The model's attention before the fused call: a materialised [B, H, T, S] score matrix."""
    assert bias is None and implementation in (None, "xla")
    t, s = query.shape[1], key.shape[1]
    visible = jnp.ones((1, 1, t, s), bool)
    if mask is not None:
        visible &= mask
    if is_causal:
        visible &= jnp.tril(jnp.ones((t, s), bool))
    if key_value_seq_lengths is not None:
        visible &= (jnp.arange(s) < key_value_seq_lengths[:, None])[:, None, None, :]
    logits = jnp.einsum("BTHK,BSHK->BHTS", query, key).astype(jnp.float32) * query.shape[-1] ** -0.5
    logits = jnp.where(visible, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("BHTS,BSHK->BTHK", probs, value)


def backbone(causal=False, ctx=True, cond=False, dtype=jnp.float32):
    cfg = TransformerConfig(width=D, depth=2, heads=4, mlp_dim=2 * D, causal=causal,
                            ctx_width=D if ctx else 0, cond_dim=D if cond else 0, dtype=dtype)
    return Transformer(cfg, rngs=nnx.Rngs(0))


def inputs(t=T, seed=0):
    r = np.random.default_rng(seed)
    lengths = np.array([S, 3, 1])                    # full, padded, the null caption's one token
    return {"x_BTD": jnp.asarray(r.normal(size=(B, t, D)), jnp.float32),
            "cond_BC": jnp.asarray(r.normal(size=(B, D)), jnp.float32),
            "ctx_BSD": jnp.asarray(r.normal(size=(B, S, D)), jnp.float32),
            "ctx_mask_BS": jnp.asarray(np.arange(S)[None] < lengths[:, None]),
            "mask_BT": jnp.asarray(np.arange(t)[None] < np.array([t, 5, 1])[:, None])}


def run(model, kernel, monkeypatch, **kw):
    monkeypatch.setattr(jax.nn, "dot_product_attention", kernel)
    try:
        return nnx.jit(lambda m, kw: m(kw.pop("x_BTD"), **kw)[0])(model, dict(kw))
    finally:
        monkeypatch.setattr(jax.nn, "dot_product_attention", REAL_ATTENTION)


CASES = {   # what each paradigm's backbone and the caption encoder run
    "bidirectional_adaln_cross": (dict(cond=True), ("x_BTD", "cond_BC", "ctx_BSD", "ctx_mask_BS")),
    "causal_cross": (dict(causal=True), ("x_BTD", "ctx_BSD", "ctx_mask_BS")),
    "padded_self": (dict(ctx=False), ("x_BTD", "mask_BT")),
}


@pytest.mark.parametrize("case", CASES)
def test_fused_equals_einsum_in_training(case, monkeypatch):
    build, keys = CASES[case]
    model, x = backbone(**build), inputs()
    kw = {k: x[k] for k in keys}
    fused = run(model, REAL_ATTENTION, monkeypatch, **kw)
    reference = run(model, einsum_attention, monkeypatch, **kw)
    np.testing.assert_allclose(fused, reference, atol=1e-5, rtol=1e-5)
    assert fused.dtype == jnp.float32


def test_fused_equals_einsum_in_bfloat16(monkeypatch):
    model, x = backbone(causal=True, dtype=jnp.bfloat16), inputs()
    kw = {k: x[k] for k in ("x_BTD", "ctx_BSD", "ctx_mask_BS")}
    fused = run(model, REAL_ATTENTION, monkeypatch, **kw)
    reference = run(model, einsum_attention, monkeypatch, **kw)
    assert fused.dtype == jnp.float32                    # the residual stream and final norm
    np.testing.assert_allclose(fused, reference, atol=5e-2)


def decode(model, x, prefill: int):
    """Prefill the first `prefill` positions as one chunk, then decode one position a step."""
    cache = model.init_cache(B, T, x["ctx_BSD"])
    step = nnx.jit(lambda m, x_BTD, cache, index: m(x_BTD, ctx_mask_BS=x["ctx_mask_BS"],
                                                    cache=cache, index=index))
    out, cache = step(model, x["x_BTD"][:, :prefill], cache, 0)
    outs = [out]
    for t in range(prefill, T):
        out, cache = step(model, x["x_BTD"][:, t:t + 1], cache, t)
        outs.append(out)
    return jnp.concatenate(outs, axis=1)


@pytest.mark.parametrize("prefill", [1, 4])
def test_cached_decoding_equals_the_full_causal_pass(prefill, monkeypatch):
    model, x = backbone(causal=True), inputs()
    full = run(model, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"], ctx_BSD=x["ctx_BSD"],
               ctx_mask_BS=x["ctx_mask_BS"])
    cached = decode(model, x, prefill)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(jax.nn, "dot_product_attention", einsum_attention)
    np.testing.assert_allclose(decode(model, x, prefill), cached, atol=1e-5, rtol=1e-5)


def test_padding_is_invisible_and_equals_the_unpadded_sequence(monkeypatch):
    model, x = backbone(), inputs()
    mask = x["ctx_mask_BS"]
    out = run(model, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"], ctx_BSD=x["ctx_BSD"],
              ctx_mask_BS=mask)
    scrambled = jnp.where(mask[..., None], x["ctx_BSD"], 100.0)
    np.testing.assert_allclose(run(model, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"],
                                   ctx_BSD=scrambled, ctx_mask_BS=mask), out, atol=1e-6)
    # example 1 has 3 valid caption tokens: the same as a 3-token caption with no padding at all
    short = run(model, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"][1:2],
                ctx_BSD=x["ctx_BSD"][1:2, :3])
    np.testing.assert_allclose(out[1:2], short, atol=1e-5, rtol=1e-5)
    # the caption encoder: valid positions of a padded caption equal the unpadded caption's
    encoder = backbone(ctx=False)
    padded = run(encoder, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"], mask_BT=x["mask_BT"])
    alone = run(encoder, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"][1:2, :5])
    np.testing.assert_allclose(padded[1:2, :5], alone, atol=1e-5, rtol=1e-5)


def test_causal_attention_does_not_see_the_future(monkeypatch):
    model, x = backbone(causal=True, ctx=False), inputs()
    out = run(model, REAL_ATTENTION, monkeypatch, x_BTD=x["x_BTD"])
    changed = x["x_BTD"].at[:, 6:].add(1.0)
    out2 = run(model, REAL_ATTENTION, monkeypatch, x_BTD=changed)
    np.testing.assert_allclose(out2[:, :6], out[:, :6], atol=1e-6)
    assert not np.allclose(out2[:, 6:], out[:, 6:])


def test_caption_masks_are_prefixes():
    """Padding masks reach the kernel as lengths, which is exact only for prefix masks."""
    ids, mask = ByteTokenizer(max_len=10).encode(["a red circle", "", "a very long caption here"])
    r = np.random.default_rng(0)
    dropped = base.drop_captions(jnp.asarray(ids), jnp.asarray(mask), 0.5, jax.random.key(0))[1]
    for m in (mask, np.asarray(dropped), np.asarray(base.null_captions(ids, mask)[1]),
              base.example_captions(ml_collections.ConfigDict(
                  {"text": {"max_len": 10, "vocab_size": 50}}), 4, r)["text_mask"]):
        m = np.asarray(m)
        np.testing.assert_array_equal(m, np.arange(m.shape[1])[None] < m.sum(1, keepdims=True))


def fake_device(platform="gpu", cc="9.0", version="cuda 12.8", kind="NVIDIA H100 80GB HBM3"):
    return types.SimpleNamespace(platform=platform, compute_capability=cc, device_kind=kind,
                                 client=types.SimpleNamespace(platform_version=version))


def test_attention_kernel_choice():
    def cfg(**kw):
        return TransformerConfig(**{"width": 512, "depth": 1, "heads": 8, "mlp_dim": 8,
                                    "dtype": jnp.bfloat16, **kw})
    choose = transformer.attention_implementation
    assert choose(cfg(), fake_device()) == "cudnn"
    assert choose(cfg(), fake_device(cc="8.0", kind="A100")) == "cudnn"
    assert choose(cfg(dtype=jnp.float32), fake_device()) == "xla"       # cuDNN needs 16-bit
    assert choose(cfg(heads=2), fake_device()) == "xla"                 # head dim 256
    assert choose(cfg(), fake_device(cc="7.0", kind="V100")) == "xla"
    assert choose(cfg(), fake_device(version="rocm 6.2", cc="gfx90a")) == "xla"
    assert choose(cfg(), fake_device(platform="tpu", cc=None)) == "xla"
    assert choose(cfg(), jax.devices()[0]) == "xla"                     # this CPU
    assert choose(cfg(attention="cudnn"), jax.devices()[0]) == "cudnn"  # asked for: as asked
    with pytest.raises(ValueError, match="model.attention='flash'"):
        cfg(attention="flash")
