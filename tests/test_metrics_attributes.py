"""Per-attribute accuracy of read-back scenes, and the reconstruction ceilings built on it."""
import math

import numpy as np
import pytest

from imgsynth.data.scene import Scene, SceneObject
from imgsynth.metrics import _data, prompt_following as PF

A = SceneObject("circle", "red", "small", 0, 0)
B = SceneObject("star", "blue", "large", 1, 2)
C = SceneObject("square", "green", "large", 2, 1)


def test_attribute_accuracy_separates_the_errors():
    truth = [Scene((A, B)), Scene((C,)), Scene((A,)), Scene((B, C))]
    read = [Scene((SceneObject("circle", "blue", "small", 0, 0), B)),   # colour confusion
            Scene((SceneObject("cross", "green", "large", 2, 1),)),     # shape confusion
            Scene(()),                                                 # small object missed
            Scene((B, C))]                                             # exact
    acc = PF.attribute_accuracy(read, truth)
    # 6 true objects; 5 read in the same cell: 4 right shapes, 4 right colours, 5 right sizes.
    assert acc["shape"] == pytest.approx(4 / 5) and acc["color"] == pytest.approx(4 / 5)
    assert acc["size"] == 1.0
    assert acc["occupancy"] == pytest.approx(1 - 1 / 36)           # one of 4 × 9 cells wrong
    assert acc["position"] == 0.75 and acc["count"] == 0.75 and acc["scene"] == 0.25
    assert acc["object_small"] == pytest.approx(0 / 2)               # A twice: once recoloured, once missed
    assert acc["object_large"] == pytest.approx(3 / 4)
    assert acc["num"] == 4
    assert PF.attribute_accuracy(truth, truth) == {**{k: 1.0 for k in acc if k != "num"}, "num": 4}


def test_attribute_accuracy_bad_input():
    with pytest.raises(ValueError, match="2 read scenes for 1 true"):
        PF.attribute_accuracy([Scene(()), Scene(())], [Scene(())])
    with pytest.raises(ValueError, match="no scenes"):
        PF.attribute_accuracy([], [])
    empty = PF.attribute_accuracy([Scene(())], [Scene(())])
    assert math.isnan(empty["shape"]) and empty["scene"] == 1.0


class _Judge:
    """Reads scene i of a table for image i (the image's first pixel holds i)."""

    def __init__(self, scenes):
        self.scenes = scenes

    def read_scenes(self, images):
        return [self.scenes[int(x[0, 0, 0])] for x in images]

    def features(self, images):
        return images.reshape(len(images), -1)[:, :4].astype(np.float64)


def test_reconstruction_ceilings():
    rng = np.random.default_rng(0)
    truth = [Scene((A,)), Scene((B,)), Scene((C,)), Scene((A, C))] * 3
    images = rng.integers(0, 256, (12, 8, 8, 3)).astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(12)
    real = _data.Split(images, ["a red circle", "a blue star", "a green square",
                                "a red circle above a green square"] * 3,
                       ["colors", "colors", "colors", "position"] * 3, truth)
    judge = _Judge(truth)
    out = PF.reconstruction_ceilings(judge, real, images.copy())
    assert out["autoencoder_prompt_following"] == 1.0
    assert out["autoencoder_attributes"]["scene"] == 1.0
    assert out["autoencoder_fd_judge"] == pytest.approx(0.0, abs=1e-6)
    judge.scenes = [Scene(())] * 12
    worse = PF.reconstruction_ceilings(judge, real, images.copy())
    assert worse["autoencoder_prompt_following"] == 0.0
    assert worse["autoencoder_attributes"]["occupancy"] < 1.0
    with pytest.raises(ValueError, match="reconstructions"):
        PF.reconstruction_ceilings(judge, real, images[:3])
