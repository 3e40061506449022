"""Next-token prediction on continuous KL latent tokens: autoregressive, raster order (MAR's
causal variant, Li et al. 2024), each token modelled by the per-token flow-matching head.

Causal attention over [start, x₀ … x_{T−2}] gives the condition of x₀ … x_{T−1}; the caption
enters by cross-attention. Training scores the head's velocity at `head.time_steps` times per
token. Sampling prefills the start token and decodes one token per step from a KV cache inside a
jitted loop of fixed shapes; each token is integrated by the head with classifier-free guidance on
its velocity. `sample_uncached` recomputes the whole prefix every step — the reference the tests
compare against.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.models import token_head
from imgsynth.paradigms import base, latent_tokens


def build(config, rngs: nnx.Rngs) -> latent_tokens.LatentTokenModel:
    return latent_tokens.LatentTokenModel(config, causal=True, rngs=rngs)


def model_cost(config) -> flops.ModelCost:
    return latent_tokens.model_cost(config, causal=True)


def inference_flops(config) -> float:
    """Σₜ of the KV-cached per-token cost, the input projection and the head's steps per token
    (× 2 for Heun), plus the caption; all × 2 with guidance."""
    gh, gw = base.latent_grid(config)
    T = gh * gw
    cfg = base.backbone_config(config, causal=True)
    per_image = (flops.cached_decode_flops(cfg, T, config.text.max_len)
                 + model_cost(config).components["heads"].fwd_flops
                 + latent_tokens.head_sample_flops(config, T) + base.caption_flops(config))
    return per_image * (2 if config.sampler.guidance != 1.0 else 1)


def example_batch(config, n: int, rng) -> dict:
    return latent_tokens.example_batch(config, n, rng)


def _inputs(x_BTC):
    """Shift right: the start token (a placeholder the model replaces), then all but the last."""
    fed = jnp.concatenate([jnp.zeros_like(x_BTC[:, :1]), x_BTC[:, :-1]], axis=1)
    return fed, jnp.broadcast_to(jnp.arange(x_BTC.shape[1]) == 0, x_BTC.shape[:2])


def _conditions(model, x_BTC, text_ids, text_mask):
    return model(*_inputs(x_BTC), text_ids, text_mask)


def loss(model, batch, rng, config):
    x = latent_tokens.flat_latents(batch)
    B, T, C = x.shape
    k_head, k_drop = jax.random.split(rng)
    ids, mask = base.drop_captions(batch["text_ids"], batch["text_mask"], config.cfg_dropout,
                                   k_drop)
    z = _conditions(model, x, ids, mask)
    per_token = token_head.loss(model.head, x.reshape(B * T, C), z.reshape(B * T, -1), k_head,
                                config.head.time_steps)
    value = jnp.mean(per_token)
    return value, {"loss": value}


def eval_loss(model, batch, rng, config):
    """The head's velocity MSE at fixed times with noise fixed by `rng`, per bucket and averaged
    (per example [B])."""
    del config
    x = latent_tokens.flat_latents(batch)
    B, T, C = x.shape
    z = _conditions(model, x, batch["text_ids"], batch["text_mask"]).reshape(B * T, -1)
    noise = jax.random.normal(rng, (B * T, C))
    out = {}
    for t in latent_tokens.EVAL_TIMESTEPS:
        per_token = token_head.fixed_time_loss(model.head, x.reshape(B * T, C), z, noise, t)
        out[f"loss_t{t:.1f}"] = jnp.mean(per_token.reshape(B, T), axis=-1)
    out["loss"] = jnp.mean(jnp.stack(list(out.values())), axis=0)
    return out


def _noise(rng, t, B, C):
    """The head's starting noise of token t: the same in the cached and the uncached sampler."""
    return jax.random.normal(jax.random.fold_in(rng, t), (B, C))


def sample(model, text_ids, text_mask, rng, config):
    """Latents [B, h, w, C] by KV-cached decoding: prefill the start token, then one a step."""
    B, T, C = text_ids.shape[0], model.gh * model.gw, model.x_in.in_features
    ids, mask = latent_tokens.both_captions(text_ids, text_mask, config.sampler.guidance)
    reps = ids.shape[0] // B
    cache = model.start_decoding(ids, mask)

    def step(model, t, carry):
        fed, cache, latents = carry
        special = jnp.full((B * reps,), t == 0)
        z, cache = model.decode_step(jnp.tile(fed, (reps, 1)), special, t, cache, mask)
        token = latent_tokens.sample_head(model, z, _noise(rng, t, B, C), config)
        return token, cache, latents.at[:, t].set(token)

    init = (jnp.zeros((B, C)), cache, jnp.zeros((B, T, C)))
    latents = base.fori_loop(model, 0, T, step, init)[2]
    return latents.reshape(B, model.gh, model.gw, C)


def sample_uncached(model, text_ids, text_mask, rng, config):
    """Reference sampler: recomputes the full causal forward pass for every token."""
    B, T, C = text_ids.shape[0], model.gh * model.gw, model.x_in.in_features
    ids, mask = latent_tokens.both_captions(text_ids, text_mask, config.sampler.guidance)
    reps = ids.shape[0] // B

    def step(model, t, latents):
        z_all = _conditions(model, jnp.tile(latents, (reps, 1, 1)), ids, mask)
        z = jax.lax.dynamic_index_in_dim(z_all, t, 1, keepdims=False)
        token = latent_tokens.sample_head(model, z, _noise(rng, t, B, C), config)
        return latents.at[:, t].set(token)

    latents = base.fori_loop(model, 0, T, step, jnp.zeros((B, T, C)))
    return latents.reshape(B, model.gh, model.gw, C)
