"""The generator's caption module: the jointly trained encoder, or the projection of a frozen one.

`TextEncoder` (`text.encoder=trained`) is a small bidirectional Transformer built from the shared
blocks, trained with the generator, so its FLOPs are part of training compute. With a frozen
pretrained encoder (`models/frozen_text.py`) the caption arrives as its precomputed states and
`CaptionProjection` maps them to the generator's caption width. Paradigms see only the output
sequence `ctx_BSD` and mask, so either takes the caption's place without touching any paradigm.
"""
from __future__ import annotations

import jax
from flax import nnx

from imgsynth.models.transformer import Transformer, TransformerConfig, dense, init


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



class CaptionProjection(nnx.Module):
    """Frozen-encoder states [B, S, in_width] → the generator's caption width: trained, and
    counted in training compute; the frozen encoder itself is not part of the model."""

    def __init__(self, in_width: int, out_width: int, *, rngs: nnx.Rngs, dtype):
        self.proj = dense(in_width, out_width, ("patch", "embed"), rngs=rngs, dtype=dtype)

    def __call__(self, states_BSW: jax.Array, mask_BS: jax.Array) -> jax.Array:
        del mask_BS   # masked positions are ignored by the cross-attention that reads the output
        return self.proj(states_BSW)
