"""The record layout every dataset of the suite shares, and the pieces its builders share.

One layout for shapes, image folders and mapped TFDS datasets means one transform, one tokenizer
path and one pipeline downstream: `image` (uint8 HxWx3), `caption` (text), `category`
(ClassLabel over `scene.CATEGORIES`, 'none' for real data) and `objects` (the scene; empty for
real data).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from imgsynth.data import scene as scene_lib

NONE_CATEGORY = scene_lib.CATEGORIES.index("none")


def features(resolution: int) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(resolution, resolution, 3), encoding_format="png"),
        "caption": tfds.features.Text(),
        "category": tfds.features.ClassLabel(names=scene_lib.CATEGORIES),
        "objects": tfds.features.Sequence({
            "shape": tfds.features.ClassLabel(names=scene_lib.SHAPES),
            "color": tfds.features.ClassLabel(names=scene_lib.COLOR_NAMES),
            "size": tfds.features.ClassLabel(names=scene_lib.SIZES),
            "row": np.int32,
            "col": np.int32,
        }),
    })


def empty_objects() -> dict[str, np.ndarray]:
    return scene_lib.Scene().to_record()


def fit_image(image: Image.Image | np.ndarray, resolution: int) -> np.ndarray:
    """Resize the short side to `resolution` (antialiased) and centre-crop to a square, as uint8
    RGB. Grayscale arrays are repeated to three channels."""
    if isinstance(image, np.ndarray):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"expected an HxWx3 or HxW image, got shape {array.shape}")
        if array.shape[:2] == (resolution, resolution) and array.dtype == np.uint8:
            return array
        image = Image.fromarray(array.astype(np.uint8))
    image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)), np.uint8)


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder that downloads nothing and writes ArrayRecord files.

    Nothing is downloaded, so there are no URL checksums to look up; saying so up front also
    keeps TFDS from probing the builder's source location (which needs `importlib_resources`,
    not a dependency of TFDS on Python >= 3.9).
    """

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls):
        return None

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)
