"""The record layout every dataset of the suite shares, and the pieces its builders share.

One layout for shapes, image folders and mapped TFDS datasets means one transform, one tokenizer
path and one pipeline downstream: `image` (uint8 HxWx3), `caption` (text), `category`
(ClassLabel over `scene.CATEGORIES`, 'none' for real data) and `objects` (the scene; empty for
real data). Builders hand the writer records already serialized (`example_proto`), so they are
encoded where they are made — in generation workers — and come out byte-identical however the
build was parallelised, on any host.
"""
from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import example_serializer, splits as splits_lib
from tensorflow_datasets.core import writer as writer_lib
from tensorflow_datasets.proto import tf_example_pb2

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


_OBJECT_DTYPES = {"shape": np.int64, "color": np.int64, "size": np.int64, "row": np.int32,
                  "col": np.int32}


def decode_record(raw: bytes, with_image: bool = True) -> dict:
    """A serialized record of this layout → the dict TFDS would decode, about twice as fast:
    TFDS's generic parser spends most of its time walking feature specs in Python. Without
    `with_image` the PNG is not decoded (`image` is None): scoring reads captions and scenes
    only."""
    feature = tf_example_pb2.Example.FromString(raw).features.feature
    image = None
    if with_image:
        with Image.open(io.BytesIO(feature["image"].bytes_list.value[0]), formats=("PNG",)) as im:
            image = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    objects = {k: np.asarray(feature[f"objects/{k}"].int64_list.value if f"objects/{k}" in feature
                             else (), dtype) for k, dtype in _OBJECT_DTYPES.items()}
    return {"image": image, "caption": feature["caption"].bytes_list.value[0],
            "category": np.int64(feature["category"].int64_list.value[0]), "objects": objects}


def decode_caption(raw: bytes) -> str:
    return tf_example_pb2.Example.FromString(raw).features.feature["caption"] \
        .bytes_list.value[0].decode("utf-8")


class RecordSource:
    """Random access to one split of a built dataset of this layout (len, getitem, getitems)."""

    def __init__(self, path: str, split: str):
        self.path, self.split = path, split
        self.raw = tfds.builder_from_directory(path).as_data_source(
            split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> dict:
        return decode_record(self.raw[index])

    def __getitems__(self, indices) -> list[dict]:
        return [decode_record(r) for r in self.raw.__getitems__(indices)]

    def __repr__(self) -> str:
        return f"RecordSource({self.path!r}, {self.split!r}, {len(self)} records)"


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


class OfflineInfo(tfds.core.DatasetInfo):
    """The info of a dataset built here. TFDS looks up a builder's info in its bucket while the
    dataset is not built yet, and leaves an empty `tmp*tfds` directory behind each time, even with
    the bucket switched off (as it is by default); nothing built here is in the bucket."""

    def initialize_from_bucket(self) -> None:
        pass


class _AsWritten(example_serializer.Serializer):
    """The records come serialized: the writer keeps their bytes."""

    def serialize_example(self, example: bytes) -> bytes:
        return example


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder that downloads nothing and writes ArrayRecord files of serialized records.

    `_split_generators` maps each split to an iterable of (key, `example_proto` bytes), consumed
    split after split in its order. TFDS's writer shuffles them by key (the order every build
    of a dataset shares) and writes them as they are: TFDS would encode and serialize each record
    in this process, in an order protobuf does not fix.

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

    def _generate_splits(self, dl_manager, download_config) -> list[splits_lib.SplitInfo]:
        infos = []
        for split, serialized in self._split_generators(dl_manager).items():
            template = self._get_filename_template(split_name=split)
            writer = writer_lib.Writer(
                serializer=_AsWritten(self.info.features.get_serialized_info()),
                filename_template=template, hash_salt=split,
                disable_shuffling=self.info.disable_shuffling,
                shard_config=download_config.get_shard_config(),
                example_writer=self._example_writer(),
                ignore_duplicates=download_config.ignore_duplicates)
            for key, raw in serialized:
                writer.write(key, raw)
            shard_lengths, num_bytes = writer.finalize()
            infos.append(splits_lib.SplitInfo(name=split, shard_lengths=shard_lengths,
                                              num_bytes=num_bytes, filename_template=template))
        return infos
