"""The paradigm interface (`Paradigm`) and the pieces every paradigm shares: backbone and
caption-encoder configs, token geometry, caption dropout and guidance helpers.

A paradigm is a module (flow.py, maskgit.py, ar.py) with the functions `Paradigm` lists; the
trainer and evaluation call only these and never ask which paradigm they run. Its config
defaults live in its experiment file (experiments/<paradigm>.py).
"""
from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from imgsynth import flops
from imgsynth.models import frozen_text
from imgsynth.models.text import CaptionProjection, TextEncoder
from imgsynth.models.transformer import TransformerConfig



class Paradigm(Protocol):
    """What a paradigm module provides (tests check each module against it)."""

    def build(self, config, rngs: nnx.Rngs) -> nnx.Module:
        """The generator: backbone, caption encoder and the paradigm's heads."""

    def model_cost(self, config) -> flops.ModelCost:
        """Parameters and forward FLOPs per example, per component (analytic)."""

    def inference_flops(self, config) -> float:
        """FLOPs to sample one image with the configured sampler (guidance included)."""

    def example_batch(self, config, n: int, rng: np.random.Generator) -> dict:
        """A random batch of the shapes the paradigm trains on (benchmarks, compile checks)."""

    def loss(self, model, batch: dict, rng, config) -> tuple:
        """(scalar training loss, {name: scalar}) for one batch."""

    def eval_loss(self, model, batch: dict, rng, config) -> dict:
        """Deterministic per-example losses {name: [B]} (fixed noise/masks from `rng`)."""

    def sample(self, model, text_ids, text_mask, rng, config):
        """Latents or tokens [B, h, w, ...] for the captions (`text_ids`: what the caption module
        of `build_text_encoder` takes — token ids, or a frozen encoder's states)."""


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype(config: ml_collections.ConfigDict):
    """The compute dtype of matmuls (`model.dtype`); parameters, optimizer state, the EMA, norms,
    softmax and losses stay float32 whatever it is (see `models/transformer.py`).

    Touches no device: the launcher calls it through `model_cost`. Whether the device can compute
    in it is checked when a model is built (`transformer.check_compute_dtype`).
    """
    if config.model.dtype not in DTYPES:
        raise ValueError(f"model.dtype={config.model.dtype!r}; choose one of {list(DTYPES)}")
    return DTYPES[config.model.dtype]


def latent_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """Height and width of the autoencoder's latent grid (one image token per latent cell)."""
    res, f = config.data.resolution, config.autoencoder.downsample
    if res % f:
        raise ValueError(f"data.resolution={res} is not divisible by autoencoder.downsample={f}")
    return res // f, res // f


def backbone_config(config, *, causal: bool, cond_dim: int = 0) -> TransformerConfig:
    m = config.model
    return TransformerConfig(
        width=m.width, depth=m.depth, heads=m.heads, mlp_dim=m.mlp_dim, causal=causal,
        ctx_width=config.text.width, cond_dim=cond_dim, scan_layers=m.scan_layers,
        remat=m.remat, dtype=dtype(config), attention=m.attention)


def text_config(config) -> TransformerConfig:
    t, m = config.text, config.model
    return TransformerConfig(width=t.width, depth=t.depth, heads=t.heads, mlp_dim=t.mlp_dim,
                             scan_layers=m.scan_layers, remat=m.remat, dtype=dtype(config),
                             attention=m.attention)


def build_text_encoder(config, rngs: nnx.Rngs) -> TextEncoder | CaptionProjection:
    """The generator's caption module: the jointly trained encoder (token ids → states), or the
    trained projection of a frozen encoder's precomputed states (`text.encoder`)."""
    if frozen_text.is_frozen(config):
        return CaptionProjection(frozen_text.width(config), config.text.width, rngs=rngs,
                                 dtype=dtype(config))
    return TextEncoder(text_config(config), config.text.vocab_size, config.text.max_len, rngs=rngs)


def text_costs(config) -> dict[str, flops.Cost]:
    """The trained part of the caption path: the whole encoder, or a frozen one's projection."""
    t = config.text
    if frozen_text.is_frozen(config):
        return {"text_projection": flops.dense(frozen_text.width(config), t.width, t.max_len)}
    return {"text_encoder": flops.text_encoder(text_config(config), t.vocab_size, t.max_len)}


def frozen_costs(config) -> dict[str, flops.Cost]:
    """The frozen caption encoder, if any: run once per caption, never trained."""
    return {"text_encoder": frozen_text.cost(config)} if frozen_text.is_frozen(config) else {}


def caption_flops(config) -> float:
    """Forward FLOPs from a caption to the generator's context (sampling encodes on the fly)."""
    return sum(c.fwd_flops for c in (*text_costs(config).values(), *frozen_costs(config).values()))


def drop_captions(text_ids, text_mask, rate: float, rng):
    """Replaces a `rate` share of captions by the null caption, for classifier-free guidance.

    The null caption keeps only the first (start) token, so attention always has one valid key.
    """
    keep = jax.random.uniform(rng, (text_ids.shape[0], 1)) >= rate
    return null_captions(text_ids, text_mask, keep)


def null_captions(text_ids, text_mask, keep=None):
    """`text_ids` are token ids [B, L], or a frozen encoder's states [B, L, W]: its null caption
    is the state of the start token alone (causal, so the same for every caption)."""
    first = jnp.arange(text_ids.shape[1])[None] == 0
    keep = jnp.zeros((text_ids.shape[0], 1), bool) if keep is None else keep
    kept = (keep | first).reshape((*text_mask.shape, *(1,) * (text_ids.ndim - 2)))
    return jnp.where(kept, text_ids, 0), jnp.where(keep, text_mask, first)


def example_captions(config, n: int, rng) -> dict:
    """Random captions of the configured shape (benchmarks, compile checks, tests): token ids,
    or random states of the frozen encoder's width."""
    L = config.text.max_len
    lengths = rng.integers(2, L + 1, size=(n, 1))
    mask = np.arange(L)[None] < lengths
    if frozen_text.is_frozen(config):
        states = rng.normal(size=(n, L, frozen_text.width(config))).astype("float32")
        return {"text_ids": states, "text_mask": mask}
    ids = rng.integers(1, config.text.vocab_size, size=(n, L)).astype("int32")
    return {"text_ids": np.where(mask, ids, 0).astype("int32"), "text_mask": mask}


def fori_loop(model, lower: int, upper: int, body, init):
    """`jax.lax.fori_loop` whose body receives the model: `body(model, i, carry) -> carry`.

    NNX modules may not be closed over by raw JAX loops (their variables would live at another
    trace level), so the model's state travels through the loop carry and is merged each step.
    """
    graphdef, state = nnx.split(model)

    def step(i, c):
        state, carry = c
        return state, body(nnx.merge(graphdef, state), i, carry)

    return jax.lax.fori_loop(lower, upper, step, (state, init))[1]
