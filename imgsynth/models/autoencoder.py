"""Convolutional autoencoders whose latent space every paradigm generates in.

One ResNet trunk (GroupNorm + SiLU residual blocks, stride-2 convolutions down, nearest-neighbour
upsampling + convolution up; NHWC) with two bottlenecks, so diffusion and the token paradigms see
the same number of image tokens:

- 'kl': a diagonal Gaussian posterior regularised towards N(0, I) (continuous latents);
- 'lfq': Lookup-Free Quantization (MAGVIT-v2): each of b channels is quantised to ±1, so the
  implicit codebook {-1, +1}^b has 2^b entries and no embedding table;
- 'fsq': Finite Scalar Quantization (Mentzer et al. 2023): channel k is bounded and rounded to
  one of L_k levels, so the implicit codebook has Π L_k entries, again without a table, and
  needs no auxiliary loss.

The downsampling factor f = patch_size · 2^(stride-2 stages): the first `patch_size`² pixels are
folded into channels (space-to-depth) and unfolded again after the decoder, so the trunk never
runs at full resolution; on a CPU that is most of the cost (see docs/autoencoders.md).

Index order of both discrete kinds: mixed radix over the channels' digits with channel 0 the most
significant (`digits_to_indices`). For LFQ the digit is 1 where the code is +1, so channel k has
weight 2^(b-1-k); for FSQ digit d of L levels is the code d / ⌊L/2⌋ − 1. A contiguous group of
channels is therefore a contiguous group of index digits: the token models' factors
(`factor_sizes`, `indices_to_factors`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth.models.layers import depth_to_space, space_to_depth

KINDS = ("kl", "lfq", "fsq")
DISCRETE_KINDS = ("lfq", "fsq")
DOWNSAMPLE_FACTORS = (2, 4, 8, 16)
RECON_LOSSES = ("l1", "l2")
# The LFQ codebook entropy is a softmax over all codes of a group of at most this many bits (see
# `lfq_entropies`); larger codebooks split into `entropy_groups` groups.
FULL_ENTROPY_MAX_BITS = 12
MAX_LFQ_BITS = 30  # indices are int32
MAX_CODEBOOK_SIZE = 2 ** 30
# FSQ levels when a config names none (also what autoencoders saved before the key existed used).
DEFAULT_FSQ_LEVELS = (8, 5, 5, 5)


class LatentScale(nnx.Variable):
    """A statistic of the data stored with the model (so it is checkpointed) but never trained."""


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in the usual autoencoders, fewer for narrow test models."""
    return math.gcd(channels, 32)


def _conv(cin: int, cout: int, rngs: nnx.Rngs, *, kernel: int = 3, stride: int = 1,
          zero_init: bool = False) -> nnx.Conv:
    kwargs = {"kernel_init": nnx.initializers.zeros_init()} if zero_init else {}
    return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride), padding="SAME",
                    rngs=rngs, **kwargs)


class ResBlock(nnx.Module):
    """GroupNorm → SiLU → conv, twice, plus a (1×1-projected) skip.

    The second convolution starts at zero so every block is the identity at initialisation; short
    training runs converge noticeably faster that way.
    """

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.conv1 = _conv(cin, cout, rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout), rngs=rngs)
        self.conv2 = _conv(cout, cout, rngs, zero_init=True)
        self.skip = _conv(cin, cout, rngs, kernel=1) if cin != cout else None

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h = self.conv1(nnx.silu(self.norm1(x_BHWC)))
        h = self.conv2(nnx.silu(self.norm2(h)))
        return h + (x_BHWC if self.skip is None else self.skip(x_BHWC))


class Downsample(nnx.Module):
    """Stride-2 3×3 convolution: halves height and width."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, rngs, stride=2)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return self.conv(x_BHWC)


class Upsample(nnx.Module):
    """Nearest-neighbour ×2 then a 3×3 convolution (no checkerboard artefacts of transposed convs)."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        x_BHWC = jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)
        return self.conv(x_BHWC)


class Encoder(nnx.Module):
    """Images → feature map at 1/f resolution; one level per entry of `channel_mult`."""

    def __init__(self, *, in_channels: int, channels: int, channel_mult: tuple[int, ...],
                 num_res_blocks: int, patch_size: int, out_channels: int, rngs: nnx.Rngs):
        self.patch_size = patch_size
        widths = [channels * m for m in channel_mult]
        self.conv_in = _conv(in_channels * patch_size ** 2, widths[0], rngs)
        layers, c = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, width, rngs=rngs))
                c = width
            if level < len(widths) - 1:
                layers.append(Downsample(c, rngs=rngs))
        layers.append(ResBlock(c, c, rngs=rngs))  # middle block at the latent resolution
        self.layers = nnx.List(layers)
        self.norm_out = nnx.GroupNorm(c, num_groups=_groups(c), rngs=rngs)
        self.conv_out = _conv(c, out_channels, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        if self.patch_size > 1:
            x_BHWC = space_to_depth(x_BHWC, self.patch_size)
        h = self.conv_in(x_BHWC)
        for layer in self.layers:
            h = layer(h)
        return self.conv_out(nnx.silu(self.norm_out(h)))


class Decoder(nnx.Module):
    """Latents at 1/f resolution → images; mirrors the encoder with one more block per level."""

    def __init__(self, *, in_channels: int, channels: int, channel_mult: tuple[int, ...],
                 num_res_blocks: int, patch_size: int, out_channels: int, rngs: nnx.Rngs):
        self.patch_size = patch_size
        widths = [channels * m for m in channel_mult]
        c = widths[-1]
        self.conv_in = _conv(in_channels, c, rngs)
        layers = [ResBlock(c, c, rngs=rngs)]  # middle block at the latent resolution
        for level in reversed(range(len(widths))):
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(c, widths[level], rngs=rngs))
                c = widths[level]
            if level > 0:
                layers.append(Upsample(c, rngs=rngs))
        self.layers = nnx.List(layers)
        self.norm_out = nnx.GroupNorm(c, num_groups=_groups(c), rngs=rngs)
        self.conv_out = _conv(c, out_channels * patch_size ** 2, rngs)

    def __call__(self, z_BhwC: jax.Array) -> jax.Array:
        h = self.conv_in(z_BhwC)
        for layer in self.layers:
            h = layer(h)
        x = self.conv_out(nnx.silu(self.norm_out(h)))
        return depth_to_space(x, self.patch_size) if self.patch_size > 1 else x


# ----------------------------------------------------------------------------------------------
# KL bottleneck
# ----------------------------------------------------------------------------------------------

def gaussian_sample(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """Reparameterised sample mean + σ·ε, so gradients reach mean and log-variance."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) per latent element, averaged over all elements."""
    return jnp.mean(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))


# ----------------------------------------------------------------------------------------------
# Discrete codes: indices, digits and factors
# ----------------------------------------------------------------------------------------------

def _radix_weights(levels: tuple[int, ...]) -> np.ndarray:
    """Weight of each digit in the index: Π of the later channels' levels (channel 0 first)."""
    return np.array([math.prod(levels[k + 1:]) for k in range(len(levels))], np.int64)


def digits_to_indices(digits: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """(..., C) digits (digit k in [0, levels[k])) → int32 indices in [0, Π levels)."""
    return jnp.sum(digits.astype(jnp.int32) * _radix_weights(levels).astype(np.int32), axis=-1)


def indices_to_digits(indices: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Inverse of `digits_to_indices`: int indices → (..., C) int32 digits."""
    weights = _radix_weights(levels).astype(np.int32)
    return (indices[..., None].astype(jnp.int32) // weights) % np.asarray(levels, np.int32)


def factor_sizes(levels: tuple[int, ...], factors: int) -> tuple[int, ...]:
    """Codebook sizes of `factors` contiguous, equally wide groups of channels (K = 1: the whole
    codebook). A token of b LFQ bits is K factors of b/K bits."""
    if not isinstance(factors, int) or factors < 1 or len(levels) % factors:
        raise ValueError(f"factors={factors!r} must be a positive integer dividing the "
                         f"{len(levels)} code channels (levels {tuple(levels)})")
    width = len(levels) // factors
    return tuple(math.prod(levels[j * width:(j + 1) * width]) for j in range(factors))


def indices_to_factors(indices: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Token indices → (..., K) factor indices (factor j in [0, sizes[j])); mixed radix, factor 0
    the most significant, so each factor is the index of its group of channels."""
    return indices_to_digits(indices, tuple(sizes))


def factors_to_indices(factor_ids: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Inverse of `indices_to_factors`."""
    return digits_to_indices(factor_ids, tuple(sizes))


# ----------------------------------------------------------------------------------------------
# LFQ bottleneck
# ----------------------------------------------------------------------------------------------

def codes_to_indices(codes: jax.Array) -> jax.Array:
    """(..., b) codes in {-1, +1} (any sign pattern) → int32 indices in [0, 2^b)."""
    return digits_to_indices(codes > 0, (2,) * codes.shape[-1])


def indices_to_codes(indices: jax.Array, bits: int) -> jax.Array:
    """int indices in [0, 2^b) → (..., b) float32 codes in {-1, +1}; inverse of codes_to_indices."""
    return 2.0 * indices_to_digits(indices, (2,) * bits).astype(jnp.float32) - 1.0


def lfq_quantize(z: jax.Array) -> jax.Array:
    """Sign quantisation (0 → +1) with a straight-through gradient."""
    q = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
    return z + jax.lax.stop_gradient(q - z)


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-10, 1.0)), axis=axis)


def entropy_groups_for(bits: int, groups: int = 0) -> int:
    """The number of codebook-entropy groups: `groups` if given (checked), else the fewest groups
    of equal width ≤ FULL_ENTROPY_MAX_BITS bits."""
    if groups == 0:
        return next(g for g in range(1, bits + 1)
                    if bits % g == 0 and bits // g <= FULL_ENTROPY_MAX_BITS)
    if groups < 1 or bits % groups:
        raise ValueError(f"entropy_groups={groups} must divide lfq_bits={bits} (0: automatic)")
    if bits // groups > FULL_ENTROPY_MAX_BITS:
        raise ValueError(
            f"lfq_bits={bits} in {groups} entropy group(s) is a {bits // groups}-bit codebook per "
            f"group, too large for the full codebook-entropy softmax (at most "
            f"{FULL_ENTROPY_MAX_BITS} bits: 2^{FULL_ENTROPY_MAX_BITS} codes per position); set "
            f"autoencoder.entropy_groups to a divisor of {bits} of at least "
            f"{math.ceil(bits / FULL_ENTROPY_MAX_BITS)}, or 0 for automatic")
    return groups


def lfq_entropies(z_NB: jax.Array, temperature: float,
                  groups: int = 0) -> tuple[jax.Array, jax.Array]:
    """MAGVIT-v2 entropy terms (nats) from q(c|z) = softmax_c(-‖z − c‖² / T) over the 2^b codes.

    ‖z − c‖² = ‖z‖² + b − 2 z·c, so q factorises over bits: q(c_k = +1 | z) = sigmoid(4 z_k / T).
    - per-sample entropy E_z[H(q(·|z))] (to minimise: confident assignments) is therefore computed
      exactly as the sum of per-bit entropies, for every b;
    - codebook entropy H(E_z[q(·|z)]) (to maximise: every code used) is computed exactly, with a
      softmax over all codes, within each of `groups` contiguous groups of b/G bits and summed
      (Open-MAGVIT2's sub-codebooks; `entropy_groups_for`). G = 1 is the full codebook entropy;
      G > 1 is an upper bound that balances each group but not their combinations (G = b
      balances single bits).
    """
    bits = z_NB.shape[-1]
    groups = entropy_groups_for(bits, groups)
    p_plus = jax.nn.sigmoid(4.0 * z_NB / temperature)
    per_bit = jnp.stack([p_plus, 1.0 - p_plus], axis=-1)
    per_sample = jnp.mean(jnp.sum(_entropy(per_bit), axis=-1))
    width = bits // groups
    codes_KW = indices_to_codes(jnp.arange(2 ** width), width)
    codebook = 0.0
    for g in range(groups):
        z_NW = z_NB[:, g * width:(g + 1) * width]
        probs_NK = jax.nn.softmax(2.0 * (z_NW @ codes_KW.T) / temperature, axis=-1)
        codebook = codebook + _entropy(jnp.mean(probs_NK, axis=0))
    return per_sample, codebook


# ----------------------------------------------------------------------------------------------
# FSQ bottleneck
# ----------------------------------------------------------------------------------------------

_FSQ_EPS = 1e-3


def check_fsq_levels(levels) -> tuple[int, ...]:
    """FSQ levels as a tuple of integers ≥ 2 whose product (the codebook) fits int32 indices."""
    levels = tuple(levels) if isinstance(levels, (list, tuple)) else (levels,)
    if not levels or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2
                         for v in levels):
        raise ValueError(f"fsq_levels must be a non-empty list of integers ≥ 2, got {levels!r}")
    levels = tuple(int(v) for v in levels)
    if math.prod(levels) > MAX_CODEBOOK_SIZE:
        raise ValueError(f"fsq_levels {levels} give {math.prod(levels)} codes; at most "
                         f"{MAX_CODEBOOK_SIZE} (int32 indices)")
    return levels


def _fsq_half_width(levels: tuple[int, ...]) -> np.ndarray:
    return np.asarray(levels, np.float32) // 2


def fsq_bound(z: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """tanh-bounds channel k to (−⌊L/2⌋ − ε, ⌈L/2⌉ − 1 + ε) so rounding gives L values; z = 0 → 0.
    Even L is shifted by ½ (its levels are asymmetric: −L/2 … L/2 − 1), as in the reference."""
    lv = np.asarray(levels, np.float32)
    half_l = (lv - 1.0) * (1.0 + _FSQ_EPS) / 2.0
    offset = np.where(lv % 2 == 0, 0.5, 0.0).astype(np.float32)
    shift = np.arctanh(offset / half_l).astype(np.float32)
    return jnp.tanh(z + shift) * half_l - offset


def fsq_quantize(z: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Bound, round with a straight-through gradient, and normalise to codes in [−1, 1]."""
    bounded = fsq_bound(z, levels)
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    return rounded / _fsq_half_width(levels)


def fsq_codes_to_indices(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """(..., C) FSQ codes → int32 indices in [0, Π levels)."""
    half = _fsq_half_width(levels)
    return digits_to_indices(jnp.round(codes * half + half).astype(jnp.int32), levels)


def fsq_indices_to_codes(indices: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """int indices → (..., C) float32 FSQ codes; inverse of `fsq_codes_to_indices`."""
    half = _fsq_half_width(levels)
    return (indices_to_digits(indices, levels).astype(jnp.float32) - half) / half


def code_usage(indices: np.ndarray | jax.Array, codebook_size: int) -> dict[str, float]:
    """Share of codes used at least once, and the perplexity exp(H) of the code histogram."""
    counts = np.bincount(np.asarray(indices).reshape(-1), minlength=codebook_size)
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return {"code_usage": float(np.mean(counts > 0)),
            "perplexity": float(np.exp(-np.sum(nz * np.log(nz))))}


# ----------------------------------------------------------------------------------------------
# The autoencoder
# ----------------------------------------------------------------------------------------------

def psnr(mse: jax.Array) -> jax.Array:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    return 10.0 * jnp.log10(4.0 / jnp.maximum(mse, 1e-12))


class Autoencoder(nnx.Module):
    """Encoder → bottleneck ('kl', 'lfq' or 'fsq') → decoder. Images are NHWC in [-1, 1]."""

    def __init__(self, *, kind: str, downsample: int, patch_size: int, channels: int,
                 channel_mult: tuple[int, ...], num_res_blocks: int, latent_channels: int,
                 lfq_bits: int, kl_weight: float, entropy_weight: float, commit_weight: float,
                 lfq_temperature: float, recon_loss: str, fsq_levels: tuple[int, ...] = DEFAULT_FSQ_LEVELS,
                 entropy_groups: int = 0, image_channels: int = 3, rngs: nnx.Rngs):
        _validate(kind=kind, downsample=downsample, patch_size=patch_size, channels=channels,
                  channel_mult=channel_mult, num_res_blocks=num_res_blocks, lfq_bits=lfq_bits,
                  latent_channels=latent_channels, recon_loss=recon_loss,
                  lfq_temperature=lfq_temperature)
        self.kind = kind
        self.downsample = downsample
        # Levels of each code channel of a discrete kind (LFQ: two), None for KL.
        self.levels = {"kl": None, "lfq": (2,) * lfq_bits,
                       "fsq": check_fsq_levels(fsq_levels) if kind == "fsq" else None}[kind]
        self.entropy_groups = entropy_groups_for(lfq_bits, entropy_groups) if kind == "lfq" else 0
        self.code_channels = latent_channels if kind == "kl" else len(self.levels)
        self.image_channels = image_channels
        self.kl_weight = kl_weight
        self.entropy_weight = entropy_weight
        self.commit_weight = commit_weight
        self.lfq_temperature = lfq_temperature
        self.recon_loss = recon_loss
        trunk = dict(channels=channels, channel_mult=tuple(channel_mult),
                     num_res_blocks=num_res_blocks, patch_size=patch_size, rngs=rngs)
        enc_out = 2 * latent_channels if kind == "kl" else self.code_channels
        self.encoder = Encoder(in_channels=image_channels, out_channels=enc_out, **trunk)
        self.decoder = Decoder(in_channels=self.code_channels, out_channels=image_channels, **trunk)
        if kind == "kl":
            # 1/std of the latents, fitted on data after training (`fit_scale_factor`).
            self.scale_factor = LatentScale(jnp.ones((), jnp.float32))

    # -- shapes ------------------------------------------------------------------------------

    @property
    def codebook_size(self) -> int | None:
        """2^b for 'lfq', Π levels for 'fsq'; None for the continuous 'kl' latents."""
        return None if self.levels is None else math.prod(self.levels)

    def latent_shape(self, resolution: int | tuple[int, int]) -> tuple[int, int, int]:
        """(h, w, c) of the latents of one image: c = KL channels, or code channels (LFQ bits,
        FSQ levels). The discrete kinds' `encode` returns the (h, w) indices; c is the width of
        their code vectors."""
        height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
        for size in (height, width):
            if size % self.downsample:
                raise ValueError(
                    f"image size {height}×{width} is not divisible by the autoencoder's "
                    f"downsampling factor {self.downsample}; resize or crop the images, or choose "
                    f"a downsample factor that divides {size}")
        return height // self.downsample, width // self.downsample, self.code_channels

    def _check_images(self, images: jax.Array) -> None:
        if images.ndim != 4 or images.shape[-1] != self.image_channels:
            raise ValueError(f"expected images of shape (B, H, W, {self.image_channels}) in [-1, 1], "
                             f"got {images.shape}")
        self.latent_shape(tuple(images.shape[1:3]))

    # -- KL ----------------------------------------------------------------------------------

    def posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """KL only: mean and log-variance of q(z | x), each (B, h, w, c)."""
        self._require("kl", "posterior")
        self._check_images(images)
        mean, logvar = jnp.split(self.encoder(images), 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def sample(self, images: jax.Array, rng: jax.Array) -> jax.Array:
        """KL only: a reparameterised sample of q(z | x) (unscaled)."""
        return gaussian_sample(*self.posterior(images), rng)

    def fit_scale_factor(self, batches: Iterable[Any]) -> float:
        """Sets the KL scale factor to 1/std of the posterior means over `batches` of images."""
        self._require("kl", "fit_scale_factor")
        total = total_sq = count = 0.0
        encode = nnx.jit(lambda model, x: model.encode(x))
        for images in batches:
            z = np.asarray(encode(self, jnp.asarray(images)), np.float64)
            total, total_sq, count = total + z.sum(), total_sq + np.square(z).sum(), count + z.size
        if not count:
            raise ValueError("fit_scale_factor needs at least one batch of images")
        std = math.sqrt(max(total_sq / count - (total / count) ** 2, 1e-12))
        self.scale_factor.value = jnp.asarray(1.0 / std, jnp.float32)
        return 1.0 / std

    # -- LFQ and FSQ -------------------------------------------------------------------------

    def quantize(self, z: jax.Array) -> jax.Array:
        """Encoder outputs → codes, with a straight-through gradient."""
        self._require_discrete("quantize")
        return lfq_quantize(z) if self.kind == "lfq" else fsq_quantize(z, self.levels)

    def indices_to_codes(self, indices: jax.Array) -> jax.Array:
        self._require_discrete("indices_to_codes")
        if self.kind == "lfq":
            return indices_to_codes(indices, self.code_channels)
        return fsq_indices_to_codes(indices, self.levels)

    def codes_to_indices(self, codes: jax.Array) -> jax.Array:
        self._require_discrete("codes_to_indices")
        return codes_to_indices(codes) if self.kind == "lfq" else fsq_codes_to_indices(codes, self.levels)

    def factor_sizes(self, factors: int) -> tuple[int, ...]:
        """Codebook sizes of the `factors` factors of a token (see `factor_sizes`)."""
        self._require_discrete("factor_sizes")
        return factor_sizes(self.levels, factors)

    # -- public API --------------------------------------------------------------------------

    def encode(self, images: jax.Array) -> jax.Array:
        """Images → KL posterior mean (B, h, w, c), unscaled; or LFQ / FSQ indices (B, h, w) int32."""
        if self.kind == "kl":
            return self.posterior(images)[0]
        self._check_images(images)
        return self.codes_to_indices(self.quantize(self.encoder(images)))

    def decode(self, latents: jax.Array) -> jax.Array:
        """Unscaled KL latents, or indices (B, h, w) / codes (B, h, w, c) → images in [-1, 1]."""
        return jnp.clip(self._decode(latents), -1.0, 1.0)

    def encode_latents(self, images: jax.Array) -> jax.Array:
        """What the generators model: KL latents × scale factor (≈ unit variance), or indices."""
        z = self.encode(images)
        return z * self.scale_factor.value if self.kind == "kl" else z

    def decode_latents(self, latents: jax.Array) -> jax.Array:
        """Inverse of `encode_latents`: scaled KL latents or indices → images in [-1, 1]."""
        if self.kind == "kl":
            latents = latents / self.scale_factor.value
        return self.decode(latents)

    def loss(self, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Training loss and metrics (unprefixed: 'recon', 'mse', 'psnr', 'kl' or the LFQ terms).

        `rng` draws the KL posterior sample; LFQ and FSQ are deterministic and ignore it. FSQ has
        no auxiliary loss: its codebook is used by construction.
        """
        if self.kind == "kl":
            mean, logvar = self.posterior(images)
            kl = gaussian_kl(mean, logvar)
            recon_images = self._decode(gaussian_sample(mean, logvar, rng))
            aux = {"kl": kl}
            regulariser = self.kl_weight * kl
        elif self.kind == "fsq":
            self._check_images(images)
            recon_images = self.decoder(self.quantize(self.encoder(images)))
            aux, regulariser = {}, 0.0
        else:
            self._check_images(images)
            z = self.encoder(images)
            recon_images = self.decoder(lfq_quantize(z))
            commit = jnp.mean(jnp.square(z - jax.lax.stop_gradient(jnp.where(z > 0, 1.0, -1.0))))
            per_sample, codebook = lfq_entropies(z.reshape(-1, z.shape[-1]), self.lfq_temperature,
                                                 self.entropy_groups)
            aux = {"commit": commit, "per_sample_entropy": per_sample,
                   "codebook_entropy": codebook}
            regulariser = (self.commit_weight * commit
                           + self.entropy_weight * (per_sample - codebook))
        err = recon_images - images
        mse = jnp.mean(jnp.square(err))
        recon = mse if self.recon_loss == "l2" else jnp.mean(jnp.abs(err))
        loss = recon + regulariser
        aux.update(loss=loss, recon=recon, mse=mse, psnr=psnr(mse))
        return loss, aux

    def _decode(self, latents: jax.Array) -> jax.Array:
        if self.levels is not None and jnp.issubdtype(latents.dtype, jnp.integer):
            latents = self.indices_to_codes(latents)
        if latents.ndim != 4 or latents.shape[-1] != self.code_channels:
            what = "indices (B, h, w) or codes" if self.levels is not None else "latents"
            raise ValueError(f"{self.kind} decode expects {what} of shape (B, h, w, "
                             f"{self.code_channels}), got {latents.shape}")
        return self.decoder(latents)

    def _require_discrete(self, what: str) -> None:
        if self.levels is None:
            raise ValueError(f"{what} is defined for the discrete kinds {DISCRETE_KINDS}, this "
                             f"autoencoder is '{self.kind}'")

    def _require(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"{what} is defined for the '{kind}' autoencoder, this one is "
                             f"'{self.kind}'")


def _validate(*, kind, downsample, channel_mult, num_res_blocks, patch_size, channels, lfq_bits,
              latent_channels, recon_loss, lfq_temperature) -> None:
    if kind not in KINDS:
        raise ValueError(f"autoencoder kind must be one of {KINDS}, got {kind!r}")
    if downsample not in DOWNSAMPLE_FACTORS:
        raise ValueError(f"downsample must be one of {DOWNSAMPLE_FACTORS}, got {downsample}")
    if patch_size < 1 or downsample % patch_size or patch_size & (patch_size - 1):
        raise ValueError(f"patch_size must be a power of 2 dividing downsample={downsample}, "
                         f"got {patch_size}")
    levels = int(math.log2(downsample // patch_size)) + 1
    if len(channel_mult) != levels:
        raise ValueError(
            f"channel_mult {tuple(channel_mult)} has {len(channel_mult)} entries; downsample "
            f"{downsample} with patch_size {patch_size} needs {levels} (one per resolution level, "
            f"log2(downsample / patch_size) + 1)")
    if channels < 1 or min(channel_mult) < 1 or num_res_blocks < 1:
        raise ValueError("channels, channel_mult entries and num_res_blocks must be ≥ 1")
    if recon_loss not in RECON_LOSSES:
        raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
    if kind == "lfq" and not 1 <= lfq_bits <= MAX_LFQ_BITS:
        raise ValueError(f"lfq_bits must be in [1, {MAX_LFQ_BITS}], got {lfq_bits}")
    if kind == "lfq" and lfq_temperature <= 0:
        raise ValueError(f"lfq_temperature must be > 0, got {lfq_temperature}")
    if kind == "kl" and latent_channels < 1:
        raise ValueError(f"latent_channels must be ≥ 1, got {latent_channels}")


_CONFIG_KEYS = ("kind", "downsample", "channels", "channel_mult", "num_res_blocks", "patch_size",
                "latent_channels", "lfq_bits", "kl_weight", "entropy_weight", "commit_weight",
                "lfq_temperature", "recon_loss")
# Keys added later: autoencoders saved before them load with these values.
_OPTIONAL_KEYS = {"fsq_levels": DEFAULT_FSQ_LEVELS, "entropy_groups": 0}


def build_autoencoder(config_ae: Mapping[str, Any], rngs: nnx.Rngs) -> Autoencoder:
    """The autoencoder described by `config.autoencoder` (see experiments/autoencoder.py)."""
    missing = [k for k in _CONFIG_KEYS if k not in config_ae]
    if missing:
        raise ValueError(f"config.autoencoder lacks {missing}; see experiments/autoencoder.py")
    kwargs = {k: config_ae[k] for k in _CONFIG_KEYS}
    kwargs.update({k: config_ae.get(k, v) for k, v in _OPTIONAL_KEYS.items()})
    kwargs["channel_mult"] = tuple(kwargs["channel_mult"])
    kwargs["fsq_levels"] = tuple(kwargs["fsq_levels"])
    return Autoencoder(**kwargs, rngs=rngs)
