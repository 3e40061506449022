"""Masked autoregression on continuous KL latent tokens in random order (MAR, Li et al. 2024;
Fluid's best variant, Fan et al. 2024), each token modelled by the per-token flow-matching head.

Training masks a cosine-scheduled share of the tokens (as MaskGIT), runs the bidirectional
backbone with a learned mask vector in their place, and scores the head's velocity on the masked
tokens at `head.time_steps` times each. Sampling draws a random order per image and, over K
steps, fills the next tokens of that order — as many as the cosine schedule says (MaskGIT's
counts) — each integrated by the head from the backbone's output at its position, with
classifier-free guidance on the backbone's pass and the head's velocity.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.models import token_head
from imgsynth.paradigms import base, latent_tokens, maskgit

EVAL_MASK_RATIO = 2 / math.pi   # the mean of the training schedule cos(π/2·r), r ~ U(0, 1)


def build(config, rngs: nnx.Rngs) -> latent_tokens.LatentTokenModel:
    return latent_tokens.LatentTokenModel(config, causal=False, rngs=rngs)


def model_cost(config) -> flops.ModelCost:
    return latent_tokens.model_cost(config, causal=False)


def fill_counts(T: int, steps: int) -> list[int]:
    """Tokens filled at each step (MaskGIT's cosine counts); every token exactly once."""
    if not 1 <= steps <= T:
        raise ValueError(f"sampler.steps={steps} must be between 1 and the {T} image tokens")
    masked = maskgit.masked_counts(T, steps)
    return [prev - now for prev, now in zip([T] + masked, masked)]


def inference_flops(config) -> float:
    """K backbone passes over all T tokens, and the head on the widest step's token count at each
    of the K steps (the sampler pads every step to it), plus the caption; all × 2 with guidance."""
    gh, gw = base.latent_grid(config)
    K = config.sampler.steps
    cost = model_cost(config)
    per_pass = cost.components["generator"].fwd_flops + cost.components["heads"].fwd_flops
    widest = max(fill_counts(gh * gw, K))
    per_image = (K * per_pass + latent_tokens.head_sample_flops(config, K * widest)
                 + base.caption_flops(config))
    return per_image * (2 if config.sampler.guidance != 1.0 else 1)


def example_batch(config, n: int, rng) -> dict:
    return latent_tokens.example_batch(config, n, rng)


def _masked_mean(per_token_BT, mask_BT):
    return jnp.sum(per_token_BT * mask_BT, -1) / jnp.sum(mask_BT, -1)


def loss(model, batch, rng, config):
    x = latent_tokens.flat_latents(batch)
    B, T, C = x.shape
    k_r, k_mask, k_head, k_drop = jax.random.split(rng, 4)
    mask = maskgit.random_mask(k_mask, B, T, maskgit.mask_schedule(jax.random.uniform(k_r, (B,))))
    ids, tmask = base.drop_captions(batch["text_ids"], batch["text_mask"], config.cfg_dropout,
                                    k_drop)
    z = model(x, mask, ids, tmask)
    per_token = token_head.loss(model.head, x.reshape(B * T, C), z.reshape(B * T, -1), k_head,
                                config.head.time_steps)
    value = jnp.mean(_masked_mean(per_token.reshape(B, T), mask))
    return value, {"loss": value}


def eval_loss(model, batch, rng, config):
    """The head's velocity MSE on the masked tokens at the schedule's mean mask ratio and fixed
    times, masks and noise fixed by `rng`; per bucket and averaged (per example [B])."""
    del config
    x = latent_tokens.flat_latents(batch)
    B, T, C = x.shape
    k_mask, k_noise = jax.random.split(rng)
    mask = maskgit.random_mask(k_mask, B, T, jnp.full((B,), EVAL_MASK_RATIO))
    z = model(x, mask, batch["text_ids"], batch["text_mask"]).reshape(B * T, -1)
    noise = jax.random.normal(k_noise, (B * T, C))
    out = {}
    for t in latent_tokens.EVAL_TIMESTEPS:
        per_token = token_head.fixed_time_loss(model.head, x.reshape(B * T, C), z, noise, t)
        out[f"loss_t{t:.1f}"] = _masked_mean(per_token.reshape(B, T), mask)
    out["loss"] = jnp.mean(jnp.stack(list(out.values())), axis=0)
    return out


def sample(model, text_ids, text_mask, rng, config, return_history: bool = False):
    """Latents [B, h, w, C]; every token is filled exactly once over `sampler.steps` steps."""
    B, T, C = text_ids.shape[0], model.gh * model.gw, model.x_in.in_features
    K = config.sampler.steps
    fills = fill_counts(T, K)
    n = max(fills)                                     # every step's head batch, padded to it
    starts = jnp.asarray([sum(fills[:k]) for k in range(K)])
    fills = jnp.asarray(fills)
    ids, mask = latent_tokens.both_captions(text_ids, text_mask, config.sampler.guidance)
    reps = ids.shape[0] // B
    k_order, k_noise = jax.random.split(rng)
    order_BT = jnp.argsort(jax.random.uniform(k_order, (B, T)), axis=-1)   # a random order

    def step(model, k, carry):
        latents, known, history = carry
        z_all = model(jnp.tile(latents, (reps, 1, 1)), jnp.tile(~known, (reps, 1)), ids, mask)
        slot = jnp.arange(n)
        valid_n = slot < fills[k]
        at_Bn = jnp.broadcast_to(jnp.minimum(starts[k] + slot, T - 1), (B, n))
        pos_Bn = jnp.take_along_axis(order_BT, at_Bn, axis=-1)
        z = jnp.take_along_axis(z_all, jnp.tile(pos_Bn, (reps, 1))[..., None], axis=1)
        noise = jax.random.normal(jax.random.fold_in(k_noise, k), (B * n, C))
        tokens = latent_tokens.sample_head(model, z.reshape(reps * B * n, -1), noise, config)
        # Scatter by one-hot rows: padded slots repeat a position and must not write it.
        onehot_BnT = jax.nn.one_hot(pos_Bn, T) * valid_n[None, :, None]
        filled_BT = jnp.sum(onehot_BnT, 1) > 0
        new_BTC = jnp.einsum("bnt,bnc->btc", onehot_BnT, tokens.reshape(B, n, C))
        latents = jnp.where(filled_BT[..., None], new_BTC, latents)
        known = known | filled_BT
        return latents, known, history.at[k].set(jnp.sum(known, -1))

    init = (jnp.zeros((B, T, C)), jnp.zeros((B, T), bool), jnp.zeros((K, B), jnp.int32))
    latents, _, history = base.fori_loop(model, 0, K, step, init)
    out = latents.reshape(B, model.gh, model.gw, C)
    return (out, history) if return_history else out
