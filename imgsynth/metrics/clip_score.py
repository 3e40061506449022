"""CLIP score: 100 · max(cos(image embedding, caption embedding), 0), averaged over pairs (Hessel
et al., 2021; torchmetrics' CLIPScore), with OpenAI's CLIP from `models/clip.py`.

The weight file is made once from OpenAI's checkpoint: see `models/clip.py`.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth.models.clip import CLIP, ClipConfig, load_clip, preprocess
from imgsynth.models.clip_tokenizer import ClipTokenizer


@nnx.jit
def _cosines(model: CLIP, x_BHWC, tokens_BL):
    img, txt = model.encode_image(x_BHWC), model.encode_text(tokens_BL)
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    return jnp.sum(img * txt, axis=-1)


def clip_cosines(model: CLIP, tokenizer: ClipTokenizer, images, captions,
                 batch_size: int = 32) -> np.ndarray:
    """Per-pair cosine of image and caption embeddings; batches padded to one compiled shape."""
    captions = list(captions)
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not captions:
        raise ValueError("no image-caption pairs to score")
    cfg = model.cfg
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens, the model {cfg.vocab_size}")
    x, tokens = preprocess(images, cfg.image_resolution), tokenizer(captions, cfg.context_length)
    out = []
    for start in range(0, len(x), batch_size):
        xb, tb = x[start:start + batch_size], tokens[start:start + batch_size]
        pad = batch_size - len(xb)
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            tb = np.concatenate([tb, np.repeat(tb[:1], pad, axis=0)])
        out.append(np.asarray(_cosines(model, jnp.asarray(xb), jnp.asarray(tb)))[: len(x) - start])
    return np.concatenate(out)


def clip_scores(model: CLIP, tokenizer: ClipTokenizer, images, captions,
                batch_size: int = 32) -> np.ndarray:
    """Per-pair CLIP score 100 · max(cos, 0)."""
    return 100.0 * np.maximum(clip_cosines(model, tokenizer, images, captions, batch_size), 0.0)


@functools.lru_cache(maxsize=2)
def _cached(weights_path: str, vocab_path: str,
            config: ClipConfig | None) -> tuple[CLIP, ClipTokenizer]:
    return load_clip(weights_path, config), ClipTokenizer(vocab_path)


def clip_score(images, captions, weights_path, vocab_path, batch_size: int = 32,
               config: ClipConfig | None = None) -> float:
    """Mean CLIP score of image-caption pairs (uint8 or [0, 1] floats, [N, H, W, 3])."""
    model, tokenizer = _cached(str(weights_path), str(vocab_path), config)
    return float(np.mean(clip_scores(model, tokenizer, images, captions, batch_size)))
