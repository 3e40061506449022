"""Pixels in the two forms the suite uses: uint8 [0, 255] (stored, judged) and float [-1, 1]
(what the models read and write). One pair of conversions, so every metric sees the same pixels."""
from __future__ import annotations

import numpy as np


def to_float(images):
    """uint8 (or [0, 255] float) images → float32 in [-1, 1]; numpy or jax arrays, jit-safe."""
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images) -> np.ndarray:
    """Model outputs in [-1, 1] → uint8 host images, rounded to the nearest level and clipped."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
