"""Next-token prediction: autoregressive, raster order, on discrete LFQ or FSQ tokens.

Causal attention over [start, x₀ … x_{T−2}] predicts x₀ … x_{T−1}; the caption enters by
cross-attention. A factorised token's factors are predicted by independent heads from the same
hidden state (`token_model`). Sampling prefills the start token and then decodes one token per
step from a KV cache inside one compiled program (loops of fixed shapes, the cache updated in
place), drawing every factor with temperature, top-k and top-p applied per factor, and
classifier-free guidance on every factor's logits. `sample_uncached` recomputes the whole prefix
each step — the reference the tests and the KV-cache benchmark compare against.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.paradigms import base, token_model


def build(config, rngs: nnx.Rngs) -> token_model.TokenModel:
    return token_model.TokenModel(config, causal=True, rngs=rngs)


def example_batch(config, n: int, rng) -> dict:
    return token_model.example_batch(config, n, rng)


def model_cost(config) -> flops.ModelCost:
    return token_model.model_cost(config, causal=True)


def inference_flops(config) -> float:
    """Σₜ of the KV-cached per-token cost plus the head per token (× 2 with guidance)."""
    gh, gw = base.latent_grid(config)
    T = gh * gw
    cfg = base.backbone_config(config, causal=True)
    per_image = (flops.cached_decode_flops(cfg, T, config.text.max_len)
                 + token_model.heads_cost(config, T).fwd_flops
                 + base.caption_flops(config))
    return per_image * (2 if config.sampler.guidance != 1.0 else 1)


def _inputs(model, tokens_BT):
    """Shift right: the start token, then every token but the last."""
    start = jnp.full((tokens_BT.shape[0], 1), model.special, tokens_BT.dtype)
    return jnp.concatenate([start, tokens_BT[:, :-1]], axis=1)


def _nll(model, batch):
    tokens = batch["tokens"].reshape(batch["tokens"].shape[0], -1)
    logits = model(_inputs(model, tokens), batch["text_ids"], batch["text_mask"])
    return jnp.mean(token_model.cross_entropy(logits, tokens, model.sizes), axis=-1)   # per example


def loss(model, batch, rng, config):
    ids, mask = base.drop_captions(batch["text_ids"], batch["text_mask"], config.cfg_dropout, rng)
    value = jnp.mean(_nll(model, {**batch, "text_ids": ids, "text_mask": mask}))
    return value, {"loss": value}


def eval_loss(model, batch, rng, config):
    """Exact per-token cross-entropy in nats (nothing random to fix), and in bits per image token
    (comparable across codebooks)."""
    del rng, config
    nll = _nll(model, batch)
    return {"loss": nll, "bits_per_token": token_model.bits(nll)}


def filter_logits(logits_BV, top_k: int, top_p: float):
    """Keeps the top-k tokens and the smallest set whose probability reaches top_p."""
    if top_k:
        kth = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth, -jnp.inf, logits_BV)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, -1), -1)
        # the smallest logit still inside the nucleus (the top token is always kept)
        cutoff_index = jnp.sum(cum < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, -1)
        logits_BV = jnp.where(logits_BV < cutoff, -jnp.inf, logits_BV)
    return logits_BV


def _draw(logits_BV, rng, s, sizes):
    """Every factor drawn with temperature, top-k and top-p applied to its own logits."""
    return token_model.draw(logits_BV, rng, sizes,
                            lambda l: filter_logits(l / s.temperature, min(s.top_k, l.shape[-1]),
                                                    s.top_p))[0]


def _guide(logits_2BV, guidance):
    if guidance == 1.0:
        return logits_2BV
    cond, uncond = jnp.split(logits_2BV, 2)
    return uncond + guidance * (cond - uncond)


def _both(text_ids, text_mask, guidance):
    if guidance == 1.0:
        return text_ids, text_mask
    null_ids, null_mask = base.null_captions(text_ids, text_mask)
    return jnp.concatenate([text_ids, null_ids]), jnp.concatenate([text_mask, null_mask])


# Decoding runs as this many loops over consecutive position ranges, each attending to the
# cache's prefix up to its range's end: on average (n + 1) / 2n of the cache is read per token
# instead of all of it (one compiled loop body per range).
DECODE_SEGMENTS = 4


def sample(model, text_ids, text_mask, rng, config, return_logits: bool = False):
    """Tokens [B, h, w] by KV-cached decoding: prefill the start token, then one token a step.

    One program (under the caller's jit): the guided and unguided halves run as one batch, the
    cache is updated in place in the loop carry, and no step returns to the host.
    """
    B, T, s = text_ids.shape[0], model.gh * model.gw, config.sampler
    ids, mask = _both(text_ids, text_mask, s.guidance)
    reps = ids.shape[0] // B
    cache = model.start_decoding(ids, mask)

    def segment(keys):
        def step(model, t, carry):
            fed, cache, tokens, logits_hist = carry
            logits, cache = model.decode_step(jnp.tile(fed, reps), t, cache, mask, keys=keys)
            logits = _guide(logits, s.guidance)
            token = _draw(logits, jax.random.fold_in(rng, t), s, model.sizes)
            return (token, cache, tokens.at[:, t].set(token),
                    logits_hist.at[:, t].set(logits) if return_logits else logits_hist)
        return step

    start = jnp.full((B,), model.special, jnp.int32)
    hist = jnp.zeros((B, T, sum(model.sizes)) if return_logits else (0,), jnp.float32)
    carry = (start, cache, jnp.zeros((B, T), jnp.int32), hist)
    bounds = sorted({-(-T * i // DECODE_SEGMENTS) for i in range(DECODE_SEGMENTS + 1)})
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        carry = base.fori_loop(model, lo, hi, segment(hi), carry)
    _, _, tokens, hist = carry
    out = tokens.reshape(B, model.gh, model.gw)
    return (out, hist) if return_logits else out


def sample_uncached(model, text_ids, text_mask, rng, config, return_logits: bool = False):
    """Reference sampler: recomputes the full causal forward pass for every token."""
    B, T, s = text_ids.shape[0], model.gh * model.gw, config.sampler
    ids, mask = _both(text_ids, text_mask, s.guidance)
    reps = ids.shape[0] // B

    def step(model, t, carry):
        tokens, logits_hist = carry
        all_logits = model(_inputs(model, jnp.tile(tokens, (reps, 1))), ids, mask)
        logits = _guide(jax.lax.dynamic_index_in_dim(all_logits, t, 1, keepdims=False), s.guidance)
        token = _draw(logits, jax.random.fold_in(rng, t), s, model.sizes)
        return (tokens.at[:, t].set(token),
                logits_hist.at[:, t].set(logits) if return_logits else logits_hist)

    hist = jnp.zeros((B, T, sum(model.sizes)) if return_logits else (0,), jnp.float32)
    tokens, hist = base.fori_loop(model, 0, T, step, (jnp.zeros((B, T), jnp.int32), hist))
    out = tokens.reshape(B, model.gh, model.gw)
    return (out, hist) if return_logits else out
