"""Reshapes shared by the image models: patches to channels and back."""
from __future__ import annotations


def space_to_depth(x_BHWC, k: int):
    """[B, H, W, C] → [B, H/k, W/k, k·k·C]: each k×k patch becomes one pixel's channels (row-major
    within the patch), so a stride-1 layer after it sees whole patches at a fraction of the cost."""
    b, h, w, c = x_BHWC.shape
    x = x_BHWC.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // k, w // k, k * k * c)


def depth_to_space(x_BHWC, k: int):
    """Inverse of `space_to_depth`."""
    b, h, w, c = x_BHWC.shape
    x = x_BHWC.reshape(b, h, w, k, k, c // (k * k)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * k, w * k, c // (k * k))
