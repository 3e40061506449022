"""Corruptions destroy what they say and keep what they say: blank keeps the mean colour, noise the
colour statistics and nothing spatial, blur has the stated width, shuffled patches are the same
patches elsewhere; random decodes come from the autoencoder."""
import numpy as np
import pytest

from imgsynth.metrics import corruptions as C
from test_autoencoder import tiny


def shapes_like(n=4, size=32, seed=0):
    """Light backgrounds with a saturated square each: images with something to destroy."""
    rng = np.random.default_rng(seed)
    x = np.full((n, size, size, 3), 200, np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 10, 2)
        x[i, r:r + 10, c:c + 10] = rng.integers(0, 256, 3)
    return x


def neighbour_correlation(x):
    """Correlation of horizontally adjacent pixels (per image and channel, averaged)."""
    a = x[:, :, :-1].astype(np.float64)
    b = x[:, :, 1:].astype(np.float64)
    a, b = a - a.mean(axis=(1, 2), keepdims=True), b - b.mean(axis=(1, 2), keepdims=True)
    return float(np.mean((a * b).mean(axis=(1, 2)) / (a.std(axis=(1, 2)) * b.std(axis=(1, 2)))))


def test_blank_is_the_mean_colour():
    x = shapes_like()
    y = C.blank(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    np.testing.assert_array_equal(y, np.broadcast_to(y[:, :1, :1], y.shape))
    np.testing.assert_allclose(y[:, 0, 0], x.mean(axis=(1, 2)), atol=0.5)


def test_noise_keeps_colour_statistics_and_loses_all_structure():
    x = shapes_like()
    y = C.noise(x, np.random.default_rng(0))
    assert neighbour_correlation(x) > 0.8 and abs(neighbour_correlation(y)) < 0.1
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=6)
    assert not np.array_equal(y, C.noise(x, np.random.default_rng(1)))
    np.testing.assert_array_equal(y, C.noise(x, np.random.default_rng(0)))


def test_blur_has_the_stated_width():
    x = np.zeros((1, 64, 64, 3), np.uint8)
    x[:, :, 32:] = 255                                   # a vertical edge
    row = C.blur(x)[0, 32, :, 0].astype(np.float64)      # sigma = 64 / 8 = 8 px
    assert np.all(np.diff(row) >= 0) and abs(row.mean() - 127.5) < 1
    rise = np.argmax(row >= 0.9 * 255) - np.argmax(row >= 0.1 * 255)
    assert abs(rise - 2.563 * 8) <= 1.5                  # 10-90 % width of a Gaussian edge
    checker = (np.indices((32, 32)).sum(0) // 2 % 2 * 255).astype(np.uint8)
    assert C.blur(np.repeat(checker[None, ..., None], 3, -1)).std() < 1.0


def patches(image, p):
    h, w, c = image.shape
    return sorted(map(bytes, image.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4)
                      .reshape(-1, p * p * c)))


def test_shuffled_patches_are_the_same_patches_elsewhere():
    x = shapes_like(n=3)
    y = C.shuffled_patches(x, np.random.default_rng(0))  # 8 per side: 4 px patches
    for a, b in zip(x, y):
        assert patches(a, 4) == patches(b, 4) and not np.array_equal(a, b)
    assert not np.array_equal(y[0], C.shuffled_patches(x, np.random.default_rng(1))[0])
    odd = C.shuffled_patches(shapes_like(n=2, size=28), np.random.default_rng(0))  # 9 × 3 px
    np.testing.assert_array_equal(odd[:, 27:], C.blank(shapes_like(n=2, size=28))[:, 27:])
    with pytest.raises(ValueError, match="do not fit"):
        C.shuffled_patches(x[:, :4, :4], np.random.default_rng(0))


def test_smooth_noise_is_smooth_with_the_image_colours():
    x = shapes_like()
    y = C.smooth_noise(x, np.random.default_rng(0))
    assert neighbour_correlation(y) > 0.7
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=6)


def test_destroyed_names_every_corruption_and_refuses_floats():
    x = shapes_like()
    out = C.destroyed(x, seed=3)
    assert set(out) == set(C.CORRUPTIONS)
    for name, y in out.items():
        assert y.shape == x.shape and y.dtype == np.uint8 and not np.array_equal(x, y), name
        np.testing.assert_array_equal(y, C.destroyed(x, seed=3)[name])
    with pytest.raises(ValueError, match="uint8"):
        C.destroyed(x.astype(np.float32))


def test_training_negatives_are_drawn_from_the_seed():
    x = shapes_like(n=16)
    y = C.training_negatives(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.uint8
    assert all(not np.array_equal(a, b) for a, b in zip(x, y))
    np.testing.assert_array_equal(y, C.training_negatives(x, np.random.default_rng(0)))


@pytest.mark.parametrize("kind", ["kl", "fsq"])
def test_random_decodes_come_from_the_autoencoder(kind):
    model = tiny(kind, fsq_levels=(4, 4, 4)) if kind == "fsq" else tiny(kind)
    y = C.random_decodes(model, 5, 16, seed=0, batch_size=2)
    assert y.shape == (5, 16, 16, 3) and y.dtype == np.uint8
    np.testing.assert_array_equal(y, C.random_decodes(model, 5, 16, seed=0, batch_size=2))
    assert not np.array_equal(y, C.random_decodes(model, 5, 16, seed=1, batch_size=2))
