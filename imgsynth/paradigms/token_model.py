"""The network shared by the two discrete-token paradigms (MaskGIT and next-token).

Image tokens (LFQ code indices) are embedded with one extra entry — the mask token for MaskGIT, the
start token for next-token prediction — plus the fixed 2-D position table, run through the shared
backbone with the caption as cross-attention context, and read out by a linear head over the
codebook. The two paradigms differ only in the attention mask, what they feed and what they score.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from imgsynth import flops
from imgsynth.models.transformer import Transformer, dense, init, sincos_2d
from imgsynth.paradigms import base


def codebook_size(config) -> int:
    return 2 ** config.autoencoder.lfq_bits


class TokenModel(nnx.Module):
    def __init__(self, config, *, causal: bool, rngs: nnx.Rngs):
        d, dt = config.model.width, base.dtype(config)
        self.gh, self.gw = base.latent_grid(config)
        self.vocab = codebook_size(config)
        self.special = self.vocab          # mask token (MaskGIT) or start token (next-token)
        self.text = base.build_text_encoder(config, rngs)
        self.embed = nnx.Embed(self.vocab + 1, d, rngs=rngs, dtype=dt,
                               embedding_init=init(("vocab", "embed"), nnx.initializers.normal(0.02)))
        self.backbone = Transformer(base.backbone_config(config, causal=causal), rngs=rngs)
        self.head = dense(d, self.vocab, ("embed", "vocab"), rngs=rngs, dtype=dt, zero=True)

    def positions(self):
        return jnp.asarray(sincos_2d(self.gh, self.gw, self.embed.features))

    def __call__(self, tokens_BT, text_ids, text_mask):
        x_BTD = self.embed(tokens_BT) + self.positions()[None, : tokens_BT.shape[1]]
        ctx = self.text(text_ids, text_mask)
        h, _ = self.backbone(x_BTD, ctx_BSD=ctx, ctx_mask_BS=text_mask)
        return self.head(h).astype(jnp.float32)

    def start_decoding(self, text_ids, text_mask):
        """Encodes the captions once and returns an empty KV cache holding their keys/values."""
        ctx = self.text(text_ids, text_mask)
        return self.backbone.init_cache(text_ids.shape[0], self.gh * self.gw, ctx)

    def decode_step(self, tokens_B, index, cache, text_mask):
        """Logits for position `index` given the token fed there; returns the updated cache."""
        pos_D = jax.lax.dynamic_index_in_dim(self.positions(), index, keepdims=False)
        x_B1D = self.embed(tokens_B)[:, None] + pos_D
        h, cache = self.backbone(x_B1D, ctx_mask_BS=text_mask, cache=cache, index=index)
        return self.head(h[:, 0]).astype(jnp.float32), cache


def model_cost(config, *, causal: bool) -> flops.ModelCost:
    gh, gw = base.latent_grid(config)
    T, d, V = gh * gw, config.model.width, codebook_size(config)
    backbone = flops.transformer(base.backbone_config(config, causal=causal), T, config.text.max_len)
    heads = flops.embedding(V + 1, d) + flops.dense(d, V, T)
    return flops.ModelCost({"generator": backbone, "heads": heads,
                            "text_encoder": base.text_cost(config)})


def example_batch(config, n: int, rng) -> dict:
    gh, gw = base.latent_grid(config)
    tokens = rng.integers(0, codebook_size(config), size=(n, gh, gw)).astype("int32")
    return {"tokens": tokens, **base.example_captions(config, n, rng)}


def cross_entropy(logits_BTV, targets_BT):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits_BTV), targets_BT[..., None], -1)[..., 0]


def guided(model_fn, guidance: float, text_ids, text_mask):
    """Wraps `model_fn(tokens, ids, mask)` with classifier-free guidance on the logits."""
    if guidance == 1.0:
        return lambda tokens: model_fn(tokens, text_ids, text_mask)
    null_ids, null_mask = base.null_captions(text_ids, text_mask)
    ids2, mask2 = jnp.concatenate([text_ids, null_ids]), jnp.concatenate([text_mask, null_mask])

    def fn(tokens):
        cond, uncond = jnp.split(model_fn(jnp.concatenate([tokens, tokens]), ids2, mask2), 2)
        return uncond + guidance * (cond - uncond)
    return fn
