"""The network shared by the two discrete-token paradigms (MaskGIT and next-token).

Image tokens (LFQ or FSQ code indices) are embedded, plus the fixed 2-D position table, run
through the shared backbone with the caption as cross-attention context, and read out by linear
heads. The two paradigms differ only in the attention mask, what they feed and what they score.

Factorised codes: a token of a codebook of V = Π levels codes is K factors, each the index of a
contiguous group of code channels (`autoencoder.factor_sizes`; b LFQ bits → K factors of b/K
bits). The input embedding is the sum of per-factor embeddings (each with one extra row, the mask
token of MaskGIT or the start token of next-token prediction), and the output is K heads of
V_j codes, one matrix [d, Σ V_j] whose logits split per factor; the loss is the sum of the
per-factor cross-entropies, i.e. the negative log-likelihood of a token under factors predicted
independently given the context. K = 1 is the flat V-way head, so a codebook of 2^16 codes costs
a [d, 2 · 2^8] head at K = 2 instead of [d, 2^16].
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import flops
from imgsynth.models import autoencoder as ae_lib
from imgsynth.models.transformer import Transformer, dense, init, sincos_2d
from imgsynth.paradigms import base

# The tokenizer the token paradigms use unless a config says otherwise (docs/autoencoders.md).
def code_levels(config) -> tuple[int, ...]:
    """Levels of each code channel of the configured discrete autoencoder."""
    return _levels(config.autoencoder)


def _levels(a) -> tuple[int, ...]:
    """Levels of the discrete autoencoder described by `a` (kind, lfq_bits, fsq_levels)."""
    if a["kind"] == "lfq":
        if not 1 <= a["lfq_bits"] <= ae_lib.MAX_LFQ_BITS:
            raise ValueError(f"autoencoder.lfq_bits must be in [1, {ae_lib.MAX_LFQ_BITS}], "
                             f"got {a['lfq_bits']}")
        return (2,) * a["lfq_bits"]
    if a["kind"] == "fsq":
        return ae_lib.check_fsq_levels(a["fsq_levels"])
    raise ValueError(f"the token paradigms need a discrete autoencoder {ae_lib.DISCRETE_KINDS}, "
                     f"autoencoder.kind is {a['kind']!r}")


def factor_sizes(config) -> tuple[int, ...]:
    """Codebook size of each of the `autoencoder.factors` factors of a token (a config error when
    the factor count does not divide the code channels)."""
    return ae_lib.factor_sizes(code_levels(config), config.autoencoder.get("factors", 1))


def codebook_size(config) -> int:
    return math.prod(code_levels(config))


def check_tokenizer(config, info: dict) -> None:
    """Refuses tokens encoded by an autoencoder (its autoencoder.json `info`) whose codebook
    differs from the one the run's config describes, naming both."""
    want = {"kind": config.autoencoder.kind, "levels": code_levels(config)}
    trained = info.get("config", {}).get("autoencoder", {})
    try:
        got = {"kind": info.get("kind"), "levels": _levels({**trained, "kind": info.get("kind")})}
    except (KeyError, ValueError):
        got = {"kind": info.get("kind"), "levels": None}
    if got != want:
        raise ValueError(f"the encoded tokens come from a tokenizer with {got}, this run's config "
                         f"describes {want}; point autoencoder.workdir at a matching autoencoder "
                         "or change the config")


class TokenModel(nnx.Module):
    def __init__(self, config, *, causal: bool, rngs: nnx.Rngs):
        d, dt = config.model.width, base.dtype(config)
        self.gh, self.gw = base.latent_grid(config)
        self.sizes = factor_sizes(config)
        self.vocab = math.prod(self.sizes)
        self.special = self.vocab          # mask token (MaskGIT) or start token (next-token)
        # Row offset of each factor's table (V_j codes + the special row) in the one embedding.
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + tuple(v + 1 for v in self.sizes))[:-1])
        self.text = base.build_text_encoder(config, rngs)
        self.embed = nnx.Embed(sum(self.sizes) + len(self.sizes), d, rngs=rngs, dtype=dt,
                               embedding_init=init(("vocab", "embed"), nnx.initializers.normal(0.02)))
        self.backbone = Transformer(base.backbone_config(config, causal=causal), rngs=rngs)
        self.head = dense(d, sum(self.sizes), ("embed", "vocab"), rngs=rngs, dtype=dt, zero=True)

    def positions(self):
        return jnp.asarray(sincos_2d(self.gh, self.gw, self.embed.features))

    def embed_tokens(self, tokens):
        """Σ_j of factor j's embedding; the special token takes every factor's special row."""
        special = tokens == self.special
        factors = ae_lib.indices_to_factors(jnp.where(special, 0, tokens), self.sizes)
        rows = jnp.where(special[..., None], jnp.asarray(self.sizes), factors) + jnp.asarray(self.offsets)
        return jnp.sum(self.embed(rows), axis=-2)

    def __call__(self, tokens_BT, text_ids, text_mask):
        """Concatenated per-factor logits [B, T, Σ V_j]."""
        x_BTD = self.embed_tokens(tokens_BT) + self.positions()[None, : tokens_BT.shape[1]]
        ctx = self.text(text_ids, text_mask)
        h, _ = self.backbone(x_BTD, ctx_BSD=ctx, ctx_mask_BS=text_mask)
        return self.head(h).astype(jnp.float32)

    def start_decoding(self, text_ids, text_mask):
        """Encodes the captions once and returns an empty KV cache holding their keys/values."""
        ctx = self.text(text_ids, text_mask)
        return self.backbone.init_cache(text_ids.shape[0], self.gh * self.gw, ctx)

    def decode_step(self, tokens_B, index, cache, text_mask, keys: int | None = None):
        """Logits for position `index` given the token fed there; returns the updated cache.
        `keys` (static, > index): attend to the cache's first `keys` positions only."""
        pos_D = jax.lax.dynamic_index_in_dim(self.positions(), index, keepdims=False)
        x_B1D = self.embed_tokens(tokens_B)[:, None] + pos_D
        h, cache = self.backbone(x_B1D, ctx_mask_BS=text_mask, cache=cache, index=index,
                                 keys=keys)
        return self.head(h[:, 0]).astype(jnp.float32), cache


def heads_cost(config, tokens: int) -> flops.Cost:
    """Per-factor embeddings (free lookups) and the K heads applied at `tokens` positions."""
    sizes, d = factor_sizes(config), config.model.width
    return flops.embedding(sum(sizes) + len(sizes), d) + flops.dense(d, sum(sizes), tokens)


def model_cost(config, *, causal: bool) -> flops.ModelCost:
    gh, gw = base.latent_grid(config)
    T = gh * gw
    backbone = flops.transformer(base.backbone_config(config, causal=causal), T, config.text.max_len)
    return flops.ModelCost({"generator": backbone, "heads": heads_cost(config, T),
                            **base.text_costs(config)}, frozen=base.frozen_costs(config))


def example_batch(config, n: int, rng) -> dict:
    gh, gw = base.latent_grid(config)
    tokens = rng.integers(0, codebook_size(config), size=(n, gh, gw)).astype("int32")
    return {"tokens": tokens, **base.example_captions(config, n, rng)}


def split_logits(logits, sizes: tuple[int, ...]) -> list[jax.Array]:
    """Concatenated logits [..., Σ V_j] → one array per factor."""
    return jnp.split(logits, np.cumsum(sizes)[:-1], axis=-1)


def cross_entropy(logits_BTV, targets_BT, sizes: tuple[int, ...]):
    """Σ over factors of the cross-entropy of the target's factor (nats per image token)."""
    targets = ae_lib.indices_to_factors(targets_BT, sizes)
    return sum(-jnp.take_along_axis(jax.nn.log_softmax(l), targets[..., j, None], -1)[..., 0]
               for j, l in enumerate(split_logits(logits_BTV, sizes)))


def bits(nats):
    """Nats per image token → bits per image token: comparable across codebooks."""
    return nats / math.log(2.0)


def draw(logits, rng, sizes: tuple[int, ...], transform=lambda l: l):
    """Samples every factor from its (transformed: temperature, top-k, top-p) logits; returns the
    token indices and the joint log-probability Σ_j log p_j of the drawn factors."""
    ids, logp = [], 0.0
    for j, l in enumerate(split_logits(logits, sizes)):
        l = transform(l)
        f = jax.random.categorical(jax.random.fold_in(rng, j), l).astype(jnp.int32)
        ids.append(f)
        logp = logp + jnp.take_along_axis(jax.nn.log_softmax(l), f[..., None], -1)[..., 0]
    return ae_lib.factors_to_indices(jnp.stack(ids, -1), sizes), logp


def guided(model_fn, guidance: float, text_ids, text_mask):
    """Wraps `model_fn(tokens, ids, mask)` with classifier-free guidance on the logits (every
    factor's: guidance is linear in each logit, so per factor it equals guidance on log-probs)."""
    if guidance == 1.0:
        return lambda tokens: model_fn(tokens, text_ids, text_mask)
    null_ids, null_mask = base.null_captions(text_ids, text_mask)
    ids2, mask2 = jnp.concatenate([text_ids, null_ids]), jnp.concatenate([text_mask, null_mask])

    def fn(tokens):
        cond, uncond = jnp.split(model_fn(jnp.concatenate([tokens, tokens]), ids2, mask2), 2)
        return uncond + guidance * (cond - uncond)
    return fn
