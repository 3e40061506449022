"""A record of the suite's layout (`records.features`) as `tf.train.Example` bytes, written here.

Protobuf writes a map — an Example's features — in no fixed order across processes, so two builds
of one dataset differed in bytes (and in fingerprint). Even `SerializeToString(deterministic=True)`
depends on the protobuf backend: upb puts `objects/color` before `objects/col`, the pure-Python
one after. Here the features are written sorted by name (byte order), the same bytes with any
protobuf or TensorFlow installed (tests/test_data_determinism.py parses them back against TFDS's
own encoding of every feature). And generation workers import numpy and PIL only: TFDS's encoder
costs half a CPU-second to import in each worker and walks its feature specs in Python for every
record.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from imgsynth.data import scene as scene_lib

_LENGTH_DELIMITED = 2
_SMALL = [bytes((i,)) for i in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= (1 << 64) - 1   # a negative int64 is written as its 64-bit two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))            # Feature.bytes_list → BytesList.value


def _int64_feature(values: Iterable[int]) -> bytes:
    packed = b"".join(map(_varint, values.tolist() if hasattr(values, "tolist") else values))
    return _field(3, _field(1, packed) if packed else b"")   # Feature.int64_list → packed value


def example(features: Mapping[str, bytes]) -> bytes:
    """Serialized Feature messages by name → an Example, its map entries sorted by name."""
    entries = b"".join(_field(1, _field(1, name.encode()) + _field(2, feature))
                       for name, feature in sorted(features.items()))
    return _field(1, entries)                     # Example.features → Features.feature entries


def record(image: bytes, caption: str, category: str, objects: Mapping[str, Iterable[int]],
           label: str | None = None) -> bytes:
    """One record: PNG bytes, caption, category name, the scene's class ids (`Scene.to_record`)
    and, for a folder dataset, its label ('' for none)."""
    features = {"image": _bytes_feature(image), "caption": _bytes_feature(caption.encode()),
                "category": _int64_feature([scene_lib.CATEGORIES.index(category)])}
    features.update({f"objects/{key}": _int64_feature(ids) for key, ids in objects.items()})
    if label is not None:
        features["label"] = _bytes_feature(label.encode())
    return example(features)
