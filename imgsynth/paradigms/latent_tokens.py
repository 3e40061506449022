"""The network shared by the two continuous-token paradigms (next-latent-token and MAR).

Each cell of the KL autoencoder's latent grid is one continuous image token of C channels. Tokens
are projected to the backbone width, a learned vector stands in where a token is unknown (the
start of next-token prediction, the mask of MAR), the fixed 2-D position table is added, and the
shared backbone (causal or bidirectional, the caption by cross-attention) gives one output vector
per position, which conditions the per-token flow-matching head (`models/token_head.py`) that
models the token. The two paradigms differ in the attention mask, what they feed and what they
score — as the discrete pair does in `token_model.py`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import config as config_lib, flops
from imgsynth.models import token_head
from imgsynth.models.transformer import Transformer, dense, init, sincos_2d
from imgsynth.paradigms import base

EVAL_TIMESTEPS = (0.1, 0.3, 0.5, 0.7, 0.9)   # as flow matching's eval loss


def channels(config) -> int:
    """Channels of one latent token; a discrete autoencoder is refused in one line."""
    kind = config.autoencoder.kind
    if kind != "kl":
        raise ValueError(f"paradigm {config.paradigm!r} models continuous latent tokens and needs "
                         f"the continuous autoencoder (autoencoder.kind='kl'), got {kind!r}")
    return config.autoencoder.latent_channels


def head_width(config) -> int:
    return config.head.width or config.model.width


def check(config) -> None:
    """Config errors of the head and its sampler, before anything is built."""
    channels(config)
    for key, value in (("head.time_steps", config.head.time_steps),
                       ("head.depth", config.head.depth),
                       ("sampler.head_steps", config.sampler.head_steps)):
        if value < 1:
            raise config_lib.ConfigError(f"{key}={value} must be at least 1")
    if config.sampler.head_method not in token_head.METHODS:
        raise config_lib.ConfigError(f"sampler.head_method={config.sampler.head_method!r}; "
                                     f"choose one of {token_head.METHODS}")


class LatentTokenModel(nnx.Module):
    def __init__(self, config, *, causal: bool, rngs: nnx.Rngs):
        check(config)
        d, dt = config.model.width, base.dtype(config)
        self.gh, self.gw = base.latent_grid(config)
        self.text = base.build_text_encoder(config, rngs)
        self.x_in = dense(channels(config), d, ("patch", "embed"), rngs=rngs, dtype=dt)
        # The start token (causal) or the mask token (bidirectional): one learned vector.
        self.special = nnx.Param(init(("embed",), nnx.initializers.normal(0.02))(rngs.params(),
                                                                                  (d,)))
        self.backbone = Transformer(base.backbone_config(config, causal=causal), rngs=rngs)
        self.head = token_head.TokenHead(channels(config), d, head_width(config),
                                         config.head.depth, rngs=rngs, dtype=dt)

    def positions(self):
        return jnp.asarray(sincos_2d(self.gh, self.gw, self.x_in.out_features))

    def embed(self, x_BTC, special_BT):
        """Projected tokens, the special vector where `special_BT` (positions not added)."""
        x_BTD = self.x_in(x_BTC.astype(jnp.float32)).astype(jnp.float32)
        return jnp.where(special_BT[..., None], self.special[...], x_BTD)

    def __call__(self, x_BTC, special_BT, text_ids, text_mask):
        """The backbone's output vector [B, T, D] at every position (the head's condition)."""
        x_BTD = self.embed(x_BTC, special_BT) + self.positions()[None, : x_BTC.shape[1]]
        ctx = self.text(text_ids, text_mask)
        h, _ = self.backbone(x_BTD, ctx_BSD=ctx, ctx_mask_BS=text_mask)
        return h

    def start_decoding(self, text_ids, text_mask):
        """Encodes the captions once and returns an empty KV cache holding their keys/values."""
        ctx = self.text(text_ids, text_mask)
        return self.backbone.init_cache(text_ids.shape[0], self.gh * self.gw, ctx)

    def decode_step(self, x_BC, special_B, index, cache, text_mask):
        """The output vector [B, D] at position `index` given what is fed there; the new cache."""
        pos_D = jax.lax.dynamic_index_in_dim(self.positions(), index, keepdims=False)
        x_B1D = self.embed(x_BC[:, None], special_B[:, None]) + pos_D
        h, cache = self.backbone(x_B1D, ctx_mask_BS=text_mask, cache=cache, index=index)
        return h[:, 0], cache


def head_costs(config) -> tuple[flops.Cost, flops.Cost]:
    """(condition projection per token, one velocity evaluation per token) of the head."""
    return flops.token_head(channels(config), config.model.width, head_width(config),
                            config.head.depth, token_head.TIME_FREQS)


def model_cost(config, *, causal: bool) -> flops.ModelCost:
    """Training forward cost per example: the head runs `head.time_steps` velocity evaluations
    on one condition projection for every one of the T tokens (MAR's loss too is computed on all
    tokens and masked)."""
    check(config)
    gh, gw = base.latent_grid(config)
    T, d = gh * gw, config.model.width
    backbone = flops.transformer(base.backbone_config(config, causal=causal), T,
                                 config.text.max_len)
    condition, evaluation = head_costs(config)
    per_token = condition.fwd_flops + config.head.time_steps * evaluation.fwd_flops
    head = flops.Cost(condition.params + evaluation.params, 0, T * per_token)
    return flops.ModelCost({"generator": backbone,
                            "heads": flops.dense(channels(config), d, T) + flops.embedding(1, d),
                            "token_head": head, **base.text_costs(config)},
                           frozen=base.frozen_costs(config))


def head_sample_flops(config, tokens: float) -> float:
    """Forward FLOPs of sampling `tokens` tokens with the head (before guidance's × 2)."""
    condition, evaluation = head_costs(config)
    evals = config.sampler.head_steps * (2 if config.sampler.head_method == "heun" else 1)
    return tokens * (condition.fwd_flops + evals * evaluation.fwd_flops)


def example_batch(config, n: int, rng) -> dict:
    h, w = base.latent_grid(config)
    latents = rng.normal(size=(n, h, w, channels(config))).astype("float32")
    return {"latents": latents, **base.example_captions(config, n, rng)}


def flat_latents(batch):
    x = batch["latents"].astype(jnp.float32)
    return x.reshape(x.shape[0], -1, x.shape[-1])


def both_captions(text_ids, text_mask, guidance: float):
    """The captions, followed by the null captions when guidance is on (one batch of 2B)."""
    if guidance == 1.0:
        return text_ids, text_mask
    null_ids, null_mask = base.null_captions(text_ids, text_mask)
    return jnp.concatenate([text_ids, null_ids]), jnp.concatenate([text_mask, null_mask])


def sample_head(model, z_ND, noise_NC, config):
    """Tokens from the head's conditions `z_ND` ([2N] with guidance: conditional first)."""
    s = config.sampler
    z, z_null = (z_ND, None) if s.guidance == 1.0 else jnp.split(z_ND, 2)
    return token_head.sample(model.head, z, noise_NC, steps=s.head_steps, method=s.head_method,
                             temperature=s.temperature, guidance=s.guidance, z_null_ND=z_null)
