"""Inception-v3 FID exactly as pytorch-fid computes it, in Flax NNX (NHWC), from a local weight file.

The network is the TF-2015 Inception used by the original FID code (pytorch-fid's
`fid_inception_v3`): torchvision's Inception-v3 with the FID-specific blocks — average pools that
exclude padding (`FIDInceptionA/C/E_1`) and a max pool in the last block (`FIDInceptionE_2`) — and
1008 classes. Images are bilinearly resized to 299×299 (align_corners=False, no antialiasing, as
`F.interpolate`), mapped from [0, 1] to [-1, 1], and the 2048-d pool3 features go to `frechet.fd`.

Nothing is downloaded. Make the weight file once, on a machine with torch:

    python -m imgsynth.metrics.inception --convert pt_inception-2015-12-05-6726825d.pth \\
        --out inception_fid.npz

The .npz keeps pytorch-fid's state_dict names and layouts (`Conv2d_1a_3x3.conv.weight` [O,I,kh,kw],
`...bn.running_mean`, `fc.weight`); the loader transposes and checks every key.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from imgsynth import weights as weights_lib
from imgsynth.metrics import frechet

FID_SIZE = 299
WEIGHTS_HELP = (
    "Download pt_inception-2015-12-05-6726825d.pth from the pytorch-fid releases "
    "(github.com/mseitzer/pytorch-fid, release 'fid_weights') on a machine with network access, "
    "then convert it with: python -m imgsynth.metrics.inception --convert "
    "pt_inception-2015-12-05-6726825d.pth --out inception_fid.npz (needs torch there only).")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv(nnx.Module):
    """Conv (no bias) → BatchNorm(eps=1e-3, running statistics) → ReLU, torchvision's BasicConv2d."""

    def __init__(self, cin: int, cout: int, kernel, *, stride=1, padding=0, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=_pair(stride),
                             padding=((ph, ph), (pw, pw)), use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _max_pool(x, stride: int, pad: int):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                                 ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_exclude_pad(x):
    """3×3/1 average pool over valid pixels only: TF's padding='SAME' pool (count_include_pad=False)."""
    window, pads = (1, 3, 3, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 4, pads)
    ones = jnp.ones_like(x[:1, :, :, :1])
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, (1,) * 4, pads)
    return total / count


class InceptionA(nnx.Module):
    def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, _max_pool(x, 2, 0)], axis=-1)


class InceptionC(nnx.Module):
    def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
        self.branch1x1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_exclude_pad(x))
        return jnp.concatenate([self.branch1x1(x), b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin: int, *, rngs: nnx.Rngs):
        self.branch3x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool(x, 2, 0)], axis=-1)


class InceptionE(nnx.Module):
    """`pool='avg'` is FIDInceptionE_1 (pad-excluding average), `pool='max'` is FIDInceptionE_2."""

    def __init__(self, cin: int, pool: str, *, rngs: nnx.Rngs):
        self.pool = pool
        self.branch1x1 = BasicConv(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        pooled = _max_pool(x, 1, 1) if self.pool == "max" else _avg_pool_exclude_pad(x)
        return jnp.concatenate([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], axis=-1)


class InceptionV3FID(nnx.Module):
    """pytorch-fid's FID Inception; attribute names are the state_dict names, so loading is a walk."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
        self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)
        self.fc = nnx.Linear(2048, 1008, rngs=rngs)

    def pool3(self, x_BHWC):
        """2048-d pool3 features of inputs already resized and scaled to [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x_BHWC)))
        x = _max_pool(x, 2, 0)
        x = _max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 2, 0)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return jnp.mean(x, axis=(1, 2))

    def logits(self, x_BHWC):
        """1008-way logits (index 0 is the TF graph's background class); for Inception Score."""
        return self.fc(self.pool3(x_BHWC))


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Rows of `F.interpolate(mode='bilinear', align_corners=False)` weights along one axis."""
    # float32 arithmetic on purpose: torch computes the source index in float, and at large
    # downscales the float64 index differs from it in the 4th decimal.
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                     np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m


def to_unit_float(images) -> np.ndarray:
    """Checks [N, H, W, 3] RGB and maps uint8 [0, 255] (or float [0, 1]) to float32 [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("no images")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    x = images.astype(np.float32)
    if not np.all(np.isfinite(x)) or x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError("float images must lie in [0, 1] (pass uint8 for [0, 255])")
    return x


def preprocess(x_BHWC, size: int = FID_SIZE):
    """[0, 1] images → bilinear resize to size² → [-1, 1], pytorch-fid's input pipeline."""
    mh = jnp.asarray(_resize_matrix(x_BHWC.shape[1], size))
    mw = jnp.asarray(_resize_matrix(x_BHWC.shape[2], size))
    x = jnp.einsum("pw,nowc->nopc", mw, jnp.einsum("oh,nhwc->nowc", mh, x_BHWC))
    return 2.0 * x - 1.0


def _convert(key: str, array: np.ndarray):
    """pytorch-fid state_dict entry → NNX variable path and layout."""
    *module, leaf = key.split(".")
    rename = {"conv.weight": "kernel", "bn.weight": "scale", "bn.bias": "bias",
              "bn.running_mean": "mean", "bn.running_var": "var"}
    tail = ".".join(module[-1:] + [leaf])
    if tail in rename:
        value = array.transpose(2, 3, 1, 0) if leaf == "weight" and array.ndim == 4 else array
        return [((*module, rename[tail]), value)]
    if module == ["fc"] and leaf in ("weight", "bias"):
        if leaf == "weight":
            return [(("fc", "kernel"), array.T)]
        return [(("fc", "bias"), array)]
    return None


def _ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def load_inception(weights_path) -> InceptionV3FID:
    """The FID Inception with weights from a converted .npz (see the module docstring)."""
    weights = weights_lib.read_npz(weights_path, what="FID Inception", how_to_get=WEIGHTS_HELP)
    return weights_lib.load_into(lambda: InceptionV3FID(rngs=nnx.Rngs(0)), weights, _convert,
                              ignore=_ignored, what="FID Inception")


@nnx.jit(static_argnames="size")
def _features_step(model: InceptionV3FID, x_BHWC, size: int):
    return model.pool3(preprocess(x_BHWC, size))


def inception_features(model: InceptionV3FID, images, batch_size: int = 50,
                       size: int = FID_SIZE) -> np.ndarray:
    """[N, 2048] pool3 features; batches are padded to one shape so only one compile happens,
    and converted to float one at a time so a large uint8 set is never held as float32."""
    images = np.asarray(images)
    to_unit_float(images[:1])  # shape and dtype checks before any work
    out = []
    for start in range(0, len(images), batch_size):
        chunk = to_unit_float(images[start:start + batch_size])
        if len(chunk) < batch_size:
            pad = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), np.float32)
            chunk = np.concatenate([chunk, pad])
        out.append(np.asarray(_features_step(model, jnp.asarray(chunk), size)))
    return np.concatenate(out)[: len(images)].astype(np.float64)


@functools.lru_cache(maxsize=2)
def _cached_model(weights_path: str) -> InceptionV3FID:
    return load_inception(weights_path)


def fid(images_a, images_b, weights_path, batch_size: int = 50) -> float:
    """Real Inception FID between two image sets (uint8 or [0, 1] floats, [N, H, W, 3])."""
    model = _cached_model(str(weights_path))
    return frechet.fd(inception_features(model, images_a, batch_size),
                      inception_features(model, images_b, batch_size))


def convert_checkpoint(pth_path: str, out_path: str) -> None:
    """pytorch-fid .pth → .npz with the same key names; torch is needed here and only here."""
    torch = weights_lib.import_torch(".pth")
    state = torch.load(pth_path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if not _ignored(k)}
    weights_lib.load_into(lambda: InceptionV3FID(rngs=nnx.Rngs(0)), arrays, _convert,
                       what="FID Inception")  # refuse to write a file that would not load
    weights_lib.write_npz(out_path, arrays)


def main(argv=None) -> None:
    weights_lib.conversion_main(convert_checkpoint, "a pytorch-fid checkpoint (.pth)", argv)


if __name__ == "__main__":
    main()
