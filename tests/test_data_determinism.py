"""Byte-identical builds: records serialized in a fixed order, the same in every process and with
any number of workers, so a dataset's fingerprint (the key of every cache built on it) survives a
rebuild or another host's copy."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.proto import tf_example_pb2

from imgsynth.data import example_proto, records
from imgsynth.data.render import make_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tfds_encoding(example: dict, resolution: int, label: str | None = None):
    features = records.features(resolution)
    if label is not None:
        import tensorflow_datasets as tfds
        features = tfds.features.FeaturesDict({**features, "label": tfds.features.Text()})
        example = {**example, "label": label}
    serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    return serializer.get_tf_example(features.encode_example(example))


@pytest.mark.parametrize("label", [None, "", "chat noir"])
def test_records_parse_back_to_what_tfds_would_encode(label):
    examples = [make_record(16, 0, 0, i) for i in range(40)]
    examples.append(dict(examples[0], objects=records.empty_objects(), category="none",
                         caption="ünïcode ☃ caption"))
    for example in examples:
        raw = example_proto.record(**example, label=label)
        assert tf_example_pb2.Example.FromString(raw) == _tfds_encoding(example, 16, label)
        names = sorted(tf_example_pb2.Example.FromString(raw).features.feature)
        keys = [raw.index(b"\n" + bytes([len(n)]) + n.encode() + b"\x12") for n in names]
        assert keys == sorted(keys) and len(names) == 8 + (label is not None)   # sorted by name


def test_varints_cover_large_and_negative_ids():
    example = tf_example_pb2.Example.FromString(example_proto.example(
        {"x": example_proto._int64_feature([0, 127, 128, 300, 2**40, -1, -(2**63)])}))
    assert list(example.features.feature["x"].int64_list.value) == \
        [0, 127, 128, 300, 2**40, -1, -(2**63)]


_BUILD = """
import json, sys
from imgsynth.data import build
data_dir, src, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
paths = [build.build_shapes(data_dir, "r16_tiny", num_workers=workers, chunk_size=50,
                            log=lambda m: None),
         build.build_folder(data_dir, src, "mine", 16, validation_fraction=0.2,
                            log=lambda m: None)]
print(json.dumps({p: build.fingerprint(p) for p in paths}))
"""


def test_two_builds_in_separate_processes_are_byte_identical(tmp_path):
    """One build with one process, one with two workers, each in its own interpreter (protobuf's
    map order differs between processes, not within one)."""
    src = tmp_path / "images"
    src.mkdir()
    rng = np.random.default_rng(0)
    with open(src / "captions.jsonl", "w") as f:
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (24, 20, 3), np.uint8)).save(src / f"{i}.png")
            f.write(json.dumps({"file": f"{i}.png", "caption": f"image {i}",
                                "label": "odd" if i % 2 else "even"}) + "\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(tmp_path / name), str(src),
                               str(workers)], env=env, stdout=subprocess.PIPE, text=True)
             for name, workers in (("one", 1), ("two", 2))]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    one, two = ({os.path.relpath(path, tmp_path / name): fp for path, fp in out.items()}
                for name, out in zip(("one", "two"), outs))
    assert one == two and len(set(one.values())) == 2
    for rel in one:
        files = [sorted(glob.glob(str(tmp_path / name / rel / "*.array_record*")))
                 for name in ("one", "two")]
        assert [os.path.basename(f) for f in files[0]] == [os.path.basename(f) for f in files[1]]
        assert len(files[0]) >= 2
        for a, b in zip(*files):
            assert open(a, "rb").read() == open(b, "rb").read()
