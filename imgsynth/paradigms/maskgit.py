"""Masked-token prediction (MaskGIT / Muse) on discrete LFQ or FSQ tokens.

Training masks a cosine-scheduled share of the tokens and scores cross-entropy on the masked ones
(summed over a token's factors). Sampling starts fully masked and, over K steps, commits the most
confident predictions — confidence is the joint log-probability of a token's drawn factors, with
annealed Gumbel noise — until the cosine schedule reaches zero masked tokens.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.paradigms import base, token_model

EVAL_MASK_RATIOS = (0.25, 0.5, 0.75, 2 / math.pi)   # 2/π: the mean of cos(π/2·r), r ~ U(0, 1)


def build(config, rngs: nnx.Rngs) -> token_model.TokenModel:
    return token_model.TokenModel(config, causal=False, rngs=rngs)


def example_batch(config, n: int, rng) -> dict:
    return token_model.example_batch(config, n, rng)


def model_cost(config) -> flops.ModelCost:
    return token_model.model_cost(config, causal=False)


def inference_flops(config) -> float:
    cost = model_cost(config)
    per_eval = cost.components["generator"].fwd_flops + cost.components["heads"].fwd_flops
    guided = 2 if config.sampler.guidance != 1.0 else 1
    return guided * (config.sampler.steps * per_eval + base.caption_flops(config))


def mask_schedule(r):
    """Share of tokens masked at progress r ∈ [0, 1]: cos(π/2 · r)."""
    return jnp.cos(0.5 * jnp.pi * r)


def random_mask(rng, B, T, ratio_B):
    """Exactly ceil(ratio·T) (at least one) uniformly chosen positions per row."""
    n_B = jnp.clip(jnp.ceil(ratio_B * T), 1, T).astype(jnp.int32)
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (B, T)), axis=-1), axis=-1)
    return ranks < n_B[:, None]


def _masked_ce(model, tokens_BT, mask_BT, text_ids, text_mask, special):
    inputs = jnp.where(mask_BT, special, tokens_BT)
    ce = token_model.cross_entropy(model(inputs, text_ids, text_mask), tokens_BT, model.sizes)
    return jnp.sum(ce * mask_BT, -1) / jnp.sum(mask_BT, -1)   # per example


def loss(model, batch, rng, config):
    tokens = batch["tokens"].reshape(batch["tokens"].shape[0], -1)
    B, T = tokens.shape
    k_r, k_mask, k_drop = jax.random.split(rng, 3)
    mask = random_mask(k_mask, B, T, mask_schedule(jax.random.uniform(k_r, (B,))))
    ids, tmask = base.drop_captions(batch["text_ids"], batch["text_mask"], config.cfg_dropout, k_drop)
    value = jnp.mean(_masked_ce(model, tokens, mask, ids, tmask, model.special))
    return value, {"loss": value}


def eval_loss(model, batch, rng, config):
    """Masked-token cross-entropy (nats per token) at fixed mask ratios with masks fixed by `rng`,
    and the mean-ratio loss in bits per image token (comparable across codebooks)."""
    tokens = batch["tokens"].reshape(batch["tokens"].shape[0], -1)
    B, T = tokens.shape
    out = {}
    for i, ratio in enumerate(EVAL_MASK_RATIOS):
        mask = random_mask(jax.random.fold_in(rng, i), B, T, jnp.full((B,), ratio))
        name = "mean" if i == len(EVAL_MASK_RATIOS) - 1 else f"{ratio:.2f}"
        out[f"loss_mask{name}"] = _masked_ce(model, tokens, mask, batch["text_ids"],
                                             batch["text_mask"], model.special)
    out["loss"] = out["loss_maskmean"]
    out["bits_per_token"] = token_model.bits(out["loss"])
    return out


def masked_counts(T: int, steps: int) -> list[int]:
    """Tokens still masked after each step: the cosine schedule, strictly decreasing to 0."""
    counts, prev = [], T
    for k in range(steps):
        n = math.floor(T * math.cos(0.5 * math.pi * (k + 1) / steps))
        n = max(min(n, prev - 1), steps - 1 - k)   # ≥ 1 commit now and in every later step
        counts.append(n)
        prev = n
    return counts


def sample(model, text_ids, text_mask, rng, config, return_history: bool = False):
    """Tokens [B, h, w]; every token is committed exactly once over `sampler.steps` steps."""
    B, T, K = text_ids.shape[0], model.gh * model.gw, config.sampler.steps
    if not 1 <= K <= T:
        raise ValueError(f"sampler.steps={K} must be between 1 and the {T} image tokens")
    counts = jnp.asarray(masked_counts(T, K))
    special = model.special
    tokens = jnp.full((B, T), special, jnp.int32)

    def step(model, k, carry):
        tokens, rng, history = carry
        logits_fn = token_model.guided(model, config.sampler.guidance, text_ids, text_mask)
        rng, k_sample, k_gumbel = jax.random.split(rng, 3)
        masked = tokens == special
        logits = logits_fn(tokens) / config.sampler.temperature
        drawn, logp = token_model.draw(logits, k_sample, model.sizes)
        anneal = config.sampler.choice_temperature * (1.0 - (k + 1) / K)
        confidence = logp + anneal * jax.random.gumbel(k_gumbel, (B, T))
        confidence = jnp.where(masked, confidence, jnp.inf)       # committed tokens stay
        ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        still_masked = ranks < counts[k]
        tokens = jnp.where(masked & ~still_masked, drawn, tokens)
        history = history.at[k].set(jnp.sum(tokens != special, -1))
        return tokens, rng, history

    history = jnp.zeros((K, B), jnp.int32)
    tokens, _, history = base.fori_loop(model, 0, K, step, (tokens, rng, history))
    out = tokens.reshape(B, model.gh, model.gw)
    return (out, history) if return_history else out
