"""The caption encoder: a small bidirectional Transformer built from the shared blocks.

It is trained jointly with the generator, so its FLOPs are part of training compute. Paradigms see
only its output sequence `ctx_BSD` and mask, so an external encoder's precomputed embeddings can
replace it without touching any paradigm.
"""
from __future__ import annotations

import jax
from flax import nnx

from imgsynth.models.transformer import Transformer, TransformerConfig, init


class TextEncoder(nnx.Module):
    def __init__(self, cfg: TransformerConfig, vocab_size: int, max_len: int, *, rngs: nnx.Rngs):
        emb_init = nnx.initializers.normal(0.02)
        self.embed = nnx.Embed(vocab_size, cfg.width, embedding_init=init(("vocab", "embed"), emb_init),
                               rngs=rngs)
        self.pos = nnx.Param(init(("seq", "embed"), emb_init)(rngs.params(), (max_len, cfg.width)))
        self.body = Transformer(cfg, rngs=rngs)

    def __call__(self, ids_BS: jax.Array, mask_BS: jax.Array) -> jax.Array:
        x_BSD = self.embed(ids_BS) + self.pos[...][None, : ids_BS.shape[1]]
        out_BSD, _ = self.body(x_BSD, mask_BT=mask_BS)
        return out_BSD

