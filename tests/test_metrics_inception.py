"""FID Inception: the full pytorch-fid key list loads completely, and FID behaves; nothing downloaded."""
import numpy as np
import pytest
from flax import nnx

from imgsynth import weights as weights_lib
from imgsynth.metrics import inception


def _conv(name, cin, cout, kh, kw=None):
    kw = kh if kw is None else kw
    return {f"{name}.conv.weight": (cout, cin, kh, kw), f"{name}.bn.weight": (cout,),
            f"{name}.bn.bias": (cout,), f"{name}.bn.running_mean": (cout,),
            f"{name}.bn.running_var": (cout,), f"{name}.bn.num_batches_tracked": ()}


def _pytorch_fid_shapes():
    """pytorch-fid's state_dict, written out from torchvision's Inception3 + the FID blocks."""
    s = {}
    for args in [("Conv2d_1a_3x3", 3, 32, 3), ("Conv2d_2a_3x3", 32, 32, 3), ("Conv2d_2b_3x3", 32, 64, 3),
                 ("Conv2d_3b_1x1", 64, 80, 1), ("Conv2d_4a_3x3", 80, 192, 3)]:
        s |= _conv(*args)
    for name, cin, pf in [("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)]:
        for args in [("branch1x1", cin, 64, 1), ("branch5x5_1", cin, 48, 1), ("branch5x5_2", 48, 64, 5),
                     ("branch3x3dbl_1", cin, 64, 1), ("branch3x3dbl_2", 64, 96, 3),
                     ("branch3x3dbl_3", 96, 96, 3), ("branch_pool", cin, pf, 1)]:
            s |= _conv(f"{name}.{args[0]}", *args[1:])
    for args in [("branch3x3", 288, 384, 3), ("branch3x3dbl_1", 288, 64, 1),
                 ("branch3x3dbl_2", 64, 96, 3), ("branch3x3dbl_3", 96, 96, 3)]:
        s |= _conv(f"Mixed_6a.{args[0]}", *args[1:])
    for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        for args in [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1),
                     ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
                     ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
                     ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
                     ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)]:
            s |= _conv(f"{name}.{args[0]}", *args[1:])
    for args in [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                 ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                 ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)]:
        s |= _conv(f"Mixed_7a.{args[0]}", *args[1:])
    for name, cin in [("Mixed_7b", 1280), ("Mixed_7c", 2048)]:
        for args in [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1),
                     ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
                     ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
                     ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
                     ("branch_pool", cin, 192, 1, 1)]:
            s |= _conv(f"{name}.{args[0]}", *args[1:])
    return s | {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


def _random_weights(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in _pytorch_fid_shapes().items():
        if k.endswith("num_batches_tracked"):
            out[k] = np.array(0, np.int64)
        elif k.endswith("running_var") or k.endswith("bn.weight"):  # He init + unit BN: no collapse
            out[k] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        elif len(shape) == 4:
            out[k] = (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)
        else:
            out[k] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception_fid.npz"
    weights_lib.write_npz(path, _random_weights())
    return path


def test_every_pytorch_fid_key_is_consumed_and_fid_behaves(weights_file):
    assert len(_pytorch_fid_shapes()) == 94 * 6 + 2
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    assert inception.fid(a, a, weights_file, batch_size=3) == pytest.approx(0.0, abs=1e-6)
    assert inception.fid(a, b, weights_file, batch_size=3) > 1e-3
    feats = inception.inception_features(inception._cached_model(str(weights_file)), a[:2], batch_size=3)
    assert feats.shape == (2, 2048) and np.all(np.isfinite(feats))
    # pytorch-fid 0.3.0's InceptionV3([3]) with these weights loaded, on the same images:
    np.testing.assert_allclose(feats[:, :4], [[0.31909, 2.61796, 4.07826, 2.7683],
                                              [0.260077, 2.56976, 4.07085, 2.8336]], rtol=2e-5)
    np.testing.assert_allclose(feats.sum(1), [1470.1838, 1470.2324], rtol=1e-5)


def test_incomplete_or_wrong_weight_files_are_refused_with_every_problem_named():
    weights = {k: np.zeros(v, np.float32) for k, v in _pytorch_fid_shapes().items()}
    del weights["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    weights["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
    weights["fc.weight"] = np.zeros((1000, 2048), np.float32)
    with pytest.raises(ValueError) as err:
        weights_lib.load_into(lambda: inception.InceptionV3FID(rngs=nnx.Rngs(0)), weights,
                           inception._convert, ignore=inception._ignored)
    msg = str(err.value)
    assert "does not use: ['AuxLogits.fc.weight']" in msg
    assert "shape mismatches: ['fc.weight" in msg
    assert "no key fills: ['Mixed_6c.branch7x7dbl_3.bn.var']" in msg


def test_missing_weight_file_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05.*--convert"):
        inception.load_inception(tmp_path / "nope.npz")


def test_converter_without_torch_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(SystemExit, match="PyTorch"):
        inception.main(["--convert", str(tmp_path / "x.pth"), "--out", str(tmp_path / "y.npz")])


def test_resize_matches_torch_bilinear_align_corners_false():
    # F.interpolate([a, b], size=4, mode='linear', align_corners=False) = [a, .75a+.25b, .25a+.75b, b]
    np.testing.assert_allclose(inception._resize_matrix(2, 4),
                               [[1, 0], [.75, .25], [.25, .75], [0, 1]], atol=1e-7)
    m = inception._resize_matrix(400, 299)  # downscaling: no antialiasing, rows still sum to 1
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    assert (m > 0).sum(1).max() <= 2


def test_average_pool_excludes_padding_and_images_are_validated():
    ones = np.ones((1, 4, 4, 2), np.float32)
    np.testing.assert_allclose(inception._avg_pool_exclude_pad(ones), 1.0)  # corners not 4/9
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inception.to_unit_float(np.full((1, 8, 8, 3), 2.0))
    with pytest.raises(ValueError, match="RGB"):
        inception.to_unit_float(np.zeros((1, 8, 8), np.uint8))
