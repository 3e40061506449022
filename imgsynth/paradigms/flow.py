"""Diffusion by flow matching (rectified flow) on continuous KL latents.

x_t = (1 − t)·x₀ + t·ε, the network predicts the velocity ε − x₀, t is logit-normal during training.
The timestep enters through adaLN-zero, the caption through cross-attention; captions are dropped
at `cfg_dropout` so sampling can use classifier-free guidance. Sampling integrates from t = 1
(noise) to t = 0 with Euler or Heun steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.models.transformer import Transformer, dense, sincos_1d, sincos_2d
from imgsynth.paradigms import base

TIME_FREQS = 256
EVAL_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _geometry(config):
    h, w = base.latent_grid(config)
    p = config.model.patch_size
    if h % p or w % p:
        raise ValueError(f"model.patch_size={p} does not divide the {h}x{w} latent grid")
    c = config.autoencoder.latent_channels
    return h // p, w // p, p * p * c


class FlowModel(nnx.Module):
    def __init__(self, config, *, rngs: nnx.Rngs):
        d, dt = config.model.width, base.dtype(config)
        self.gh, self.gw, patch_dim = _geometry(config)
        self.p = config.model.patch_size
        self.text = base.build_text_encoder(config, rngs)
        self.patch_in = dense(patch_dim, d, ("patch", "embed"), rngs=rngs, dtype=dt)
        self.time_in = dense(TIME_FREQS, d, ("patch", "embed"), rngs=rngs, dtype=dt)
        self.time_hidden = dense(d, d, ("embed", "mlp"), rngs=rngs, dtype=dt)
        self.backbone = Transformer(base.backbone_config(config, causal=False, cond_dim=d), rngs=rngs)
        self.patch_out = dense(d, patch_dim, ("embed", "patch"), rngs=rngs, dtype=dt, zero=True)

    def __call__(self, x_BHWC, t_B, text_ids, text_mask):
        B, H, W, C = x_BHWC.shape
        p = self.p
        patches = x_BHWC.reshape(B, H // p, p, W // p, p, C).transpose(0, 1, 3, 2, 4, 5)
        pos_TD = sincos_2d(self.gh, self.gw, self.patch_in.out_features)   # a constant, not a param
        x_BTD = self.patch_in(patches.reshape(B, self.gh * self.gw, p * p * C)) + pos_TD[None]
        cond_BD = self.time_hidden(jax.nn.silu(self.time_in(sincos_1d(t_B * 1000.0, TIME_FREQS))))
        ctx = self.text(text_ids, text_mask)
        h, _ = self.backbone(x_BTD, cond_BC=cond_BD, ctx_BSD=ctx, ctx_mask_BS=text_mask)
        out = self.patch_out(h).astype(jnp.float32).reshape(B, H // p, W // p, p, p, C)
        return out.transpose(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def build(config, rngs: nnx.Rngs) -> FlowModel:
    return FlowModel(config, rngs=rngs)


def model_cost(config) -> flops.ModelCost:
    gh, gw, patch_dim = _geometry(config)
    T, d = gh * gw, config.model.width
    heads = (flops.dense(patch_dim, d, T) + flops.dense(TIME_FREQS, d, 1) + flops.dense(d, d, 1)
             + flops.dense(d, patch_dim, T))
    backbone = flops.transformer(base.backbone_config(config, causal=False, cond_dim=d), T,
                                 config.text.max_len)
    return flops.ModelCost({"generator": backbone, "heads": heads, **base.text_costs(config)},
                           frozen=base.frozen_costs(config))


def inference_flops(config) -> float:
    """Per image: steps × forward (× 2 with guidance, × 2 for Heun); captions encoded once."""
    cost = model_cost(config)
    per_eval = cost.components["generator"].fwd_flops + cost.components["heads"].fwd_flops
    evals = config.sampler.steps * (2 if config.sampler.method == "heun" else 1)
    guided = 2 if config.sampler.guidance != 1.0 else 1
    return evals * guided * per_eval + guided * base.caption_flops(config)


def example_batch(config, n: int, rng) -> dict:
    h, w = base.latent_grid(config)
    latents = rng.normal(size=(n, h, w, config.autoencoder.latent_channels)).astype("float32")
    return {"latents": latents, **base.example_captions(config, n, rng)}


def _interpolate(x0, noise, t_B):
    t = t_B[:, None, None, None]
    return (1 - t) * x0 + t * noise, noise - x0


def loss(model, batch, rng, config):
    x0 = batch["latents"].astype(jnp.float32)
    k_t, k_noise, k_drop = jax.random.split(rng, 3)
    t_B = jax.nn.sigmoid(jax.random.normal(k_t, (x0.shape[0],)))     # logit-normal(0, 1)
    x_t, target = _interpolate(x0, jax.random.normal(k_noise, x0.shape), t_B)
    ids, mask = base.drop_captions(batch["text_ids"], batch["text_mask"], config.cfg_dropout, k_drop)
    v = model(x_t, t_B, ids, mask)
    value = jnp.mean((v - target) ** 2)
    return value, {"loss": value}


def eval_loss(model, batch, rng, config):
    """Velocity MSE at fixed timesteps with noise fixed by `rng`; per bucket and averaged."""
    x0 = batch["latents"].astype(jnp.float32)
    noise = jax.random.normal(rng, x0.shape)
    out = {}
    for t in EVAL_TIMESTEPS:
        t_B = jnp.full((x0.shape[0],), t)
        x_t, target = _interpolate(x0, noise, t_B)
        v = model(x_t, t_B, batch["text_ids"], batch["text_mask"])
        out[f"loss_t{t:.1f}"] = jnp.mean((v - target) ** 2, axis=(1, 2, 3))
    out["loss"] = jnp.mean(jnp.stack(list(out.values())), axis=0)
    return out   # per-example values [B]; the caller averages over valid examples


def _guided_velocity(model, x, t, ids, mask, null_ids, null_mask, guidance):
    t_B = jnp.full((x.shape[0],), t)
    if guidance == 1.0:
        return model(x, t_B, ids, mask)
    both = model(jnp.concatenate([x, x]), jnp.concatenate([t_B, t_B]),
                 jnp.concatenate([ids, null_ids]), jnp.concatenate([mask, null_mask]))
    cond, uncond = jnp.split(both, 2)
    return uncond + guidance * (cond - uncond)


def sample(model, text_ids, text_mask, rng, config):
    """Latents [B, h, w, c] for the captions; Euler or Heun from t = 1 to t = 0."""
    h, w = base.latent_grid(config)
    steps, guidance, method = config.sampler.steps, config.sampler.guidance, config.sampler.method
    if method not in ("euler", "heun"):
        raise ValueError(f"sampler.method={method!r}; choose 'euler' or 'heun'")
    null_ids, null_mask = base.null_captions(text_ids, text_mask)
    x = jax.random.normal(rng, (text_ids.shape[0], h, w, config.autoencoder.latent_channels))
    ts = jnp.linspace(1.0, 0.0, steps + 1)

    def step(model, i, x):
        def velocity(x, t):
            return _guided_velocity(model, x, t, text_ids, text_mask, null_ids, null_mask, guidance)
        t, t_next = ts[i], ts[i + 1]
        v = velocity(x, t)
        x_next = x + (t_next - t) * v
        if method == "heun":
            x_next = x + (t_next - t) * 0.5 * (v + velocity(x_next, t_next))
        return x_next

    return base.fori_loop(model, 0, steps, step, x)
