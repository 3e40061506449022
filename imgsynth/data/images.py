"""Image value conventions: uint8 [0, 255] on disk and in metrics, float32 [-1, 1] in models."""
from __future__ import annotations

import numpy as np


def to_float(images) -> np.ndarray:
    """uint8 [0, 255] → float32 [-1, 1] (computed in float64, then rounded once)."""
    return (np.asarray(images, np.float64) / 127.5 - 1.0).astype(np.float32)


def to_uint8(images) -> np.ndarray:
    """float [-1, 1] (clipped) → uint8 [0, 255], rounded to nearest."""
    return np.clip(np.rint((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
