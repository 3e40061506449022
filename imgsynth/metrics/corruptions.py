"""Real images destroyed until they carry no readable scene: what an instrument must not credit.

An under-trained generator draws colour noise, blur or fragments; an instrument that reads a
scene into them credits prompts nobody drew. Each corruption keeps some statistic of the real
image (its mean colour, its colour spread, its local texture, its coarse layout) and removes the
shapes, so a prompt-following or retrieval score on its output above chance is a false positive.
`random_decodes` is the autoencoder's own garbage: images decoded from random latents or tokens.

All take and return uint8 [N, H, W, 3] images; randomness comes from the `rng` given.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from imgsynth.data import images as images_lib


def blank(images: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Each image filled with its own mean colour."""
    mean = images.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    return np.broadcast_to(np.rint(mean), images.shape).astype(np.uint8)


def noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every pixel drawn independently from a Gaussian with the image's per-channel mean and
    standard deviation: the colours stay, any spatial structure is gone."""
    x = images.astype(np.float64)
    mean, std = x.mean(axis=(1, 2), keepdims=True), x.std(axis=(1, 2), keepdims=True)
    return _uint8(mean + std * rng.standard_normal(images.shape))


def blur(images: np.ndarray, rng: np.random.Generator | None = None,
         sigma_fraction: float = 1 / 8) -> np.ndarray:
    """Gaussian blur of standard deviation `sigma_fraction` × the image width (4 px at 32 px:
    a shape becomes a tinted blob; its outline is gone)."""
    sigma = sigma_fraction * images.shape[2]
    return _uint8(ndimage.gaussian_filter(images.astype(np.float64), (0, sigma, sigma, 0),
                                          mode="reflect"))


def shuffled_patches(images: np.ndarray, rng: np.random.Generator,
                     patches_per_side: int = 8) -> np.ndarray:
    """Each image cut into square patches, `patches_per_side` across its height, put back in a
    random order (its own per image): colours and local texture stay, no shape survives. A rim
    the patches do not cover (a size they do not divide) is filled with the mean colour."""
    n, h, w, c = images.shape
    p = h // patches_per_side
    if p < 1:
        raise ValueError(f"{patches_per_side} patches per side do not fit {h}×{w} images")
    ky, kx = h // p, w // p
    out = blank(images).copy()
    grid = images[:, :ky * p, :kx * p].reshape(n, ky, p, kx, p, c).transpose(0, 1, 3, 2, 4, 5)
    grid = grid.reshape(n, ky * kx, p, p, c)
    order = np.argsort(rng.random((n, ky * kx)), axis=1)
    grid = np.take_along_axis(grid, order[:, :, None, None, None], axis=1)
    out[:, :ky * p, :kx * p] = grid.reshape(n, ky, kx, p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(
        n, ky * p, kx * p, c)
    return out


def smooth_noise(images: np.ndarray, rng: np.random.Generator,
                 sigma_fraction: float = 1 / 16) -> np.ndarray:
    """Noise blurred by `sigma_fraction` × the width, rescaled to the image's per-channel mean and
    standard deviation: coloured blobs with no shape, like a decoder fed random latents."""
    n, h, w, c = images.shape
    sigma = sigma_fraction * w
    field = ndimage.gaussian_filter(rng.standard_normal(images.shape), (0, sigma, sigma, 0),
                                    mode="wrap")
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
    x = images.astype(np.float64)
    return _uint8(x.mean(axis=(1, 2), keepdims=True) + x.std(axis=(1, 2), keepdims=True) * field)


CORRUPTIONS = {"blank": blank, "noise": noise, "blur": blur, "shuffled_patches": shuffled_patches,
               "smooth_noise": smooth_noise}


# Blank is not taught as unreadable: a uniform image is an empty scene, every cell of it like a
# real empty cell, and an empty scene satisfies no prompt anyway.
TRAINING_CORRUPTIONS = ("noise", "blur", "shuffled_patches", "smooth_noise")


def training_negatives(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image destroyed by one of `TRAINING_CORRUPTIONS` drawn at random, at a strength
    drawn from the range in which no shape stays readable (blur σ 1/10–1/4 of the width,
    patches of 1/8 or 1/16 of it, blobs of 1/32–1/8): the images the judge learns to call
    unreadable."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        x = image[None]
        name = TRAINING_CORRUPTIONS[rng.integers(len(TRAINING_CORRUPTIONS))]
        if name == "blur":
            out[i] = blur(x, sigma_fraction=rng.uniform(1 / 10, 1 / 4))[0]
        elif name == "shuffled_patches":
            out[i] = shuffled_patches(x, rng, patches_per_side=int(rng.choice([8, 16])))[0]
        elif name == "smooth_noise":
            out[i] = smooth_noise(x, rng, sigma_fraction=rng.uniform(1 / 32, 1 / 8))[0]
        else:
            out[i] = CORRUPTIONS[name](x, rng)[0]
    return out


def destroyed(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """{corruption name: `images` destroyed by it}, each drawn with its own stream of `seed`."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {images.shape}")
    return {name: fn(images, np.random.default_rng([seed, i]))
            for i, (name, fn) in enumerate(CORRUPTIONS.items())}


def random_decodes(autoencoder, n: int, resolution: int, seed: int = 0,
                   batch_size: int = 256) -> np.ndarray:
    """`n` images the autoencoder decodes from random inputs: unit Gaussian scaled latents
    (KL; what a generator that learned nothing emits) or uniformly random token indices."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    h, w, c = autoencoder.latent_shape(resolution)
    size = autoencoder.codebook_size
    decode = jax.jit(autoencoder.decode_latents)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        z = (rng.integers(0, size, (b, h, w), dtype=np.int32) if size
             else rng.standard_normal((b, h, w, c)).astype(np.float32))
        out.append(images_lib.to_uint8(decode(jnp.asarray(z))))
    return np.concatenate(out)


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
