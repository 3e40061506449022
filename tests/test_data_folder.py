"""Folder ingestion: broken files are skipped and counted, odd modes converted, layout shared."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from imgsynth.data import build, folder, pipeline, records


def _save(path, array, mode=None, fmt=None):
    Image.fromarray(array, mode=mode).save(path, format=fmt)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noqa: E731
    os.makedirs(d / "sub")
    _save(d / "red.png", np.full((40, 40, 3), (200, 20, 20), np.uint8))
    _save(d / "wide.jpg", rgb(48, 96))
    _save(d / "sub" / "gray.png", rng.integers(0, 255, (36, 36), dtype=np.uint8), mode="L")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # fully transparent red → white after compositing
    _save(d / "alpha.png", rgba)
    _save(d / "pal.gif", rgb(32, 32))
    _save(d / "tiny.png", rgb(8, 8))
    Image.fromarray(rng.integers(0, 60000, (32, 32)).astype(np.uint16)).save(d / "deep.png")
    (d / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    _save(d / "whole.jpg", rgb(64, 64))
    (d / "truncated.jpg").write_bytes((d / "whole.jpg").read_bytes()[:300])
    os.remove(d / "whole.jpg")
    _save(d / "nocaption.png", rgb(32, 32))
    _save(d / "emptycaption.png", rgb(32, 32))
    lines = [{"file": "red.png", "caption": "a red square"},
             {"file": "sub/gray.png", "caption": "gray noise"},
             {"file": "alpha.png", "caption": "nothing to see"},
             {"file": "pal.gif", "caption": "a palette image"},
             {"file": "tiny.png", "caption": "too small"},
             {"file": "deep.png", "caption": "sixteen bits"},
             {"file": "garbage.jpg", "caption": "garbage"},
             {"file": "truncated.jpg", "caption": "cut short"},
             {"file": "gone.png", "caption": "no such file"},
             {"file": "emptycaption.png", "caption": "  "}]
    with open(d / folder.CAPTIONS_FILE, "w") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    (d / "wide.txt").write_text("a wide photo\n")
    return str(d)


@pytest.fixture(scope="module")
def built(src, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("data"))
    logs = []
    path = build.build_folder(data_dir, src, "mine", 32, validation_fraction=0.4, log=logs.append)
    return data_dir, path, logs


def test_skips_and_conversions_are_counted(built):
    _, path, logs = built
    summary = json.load(open(os.path.join(path, build.SUMMARY_FILE)))
    assert summary["found"] == 11  # image files, captioned or not
    assert summary["skipped"] == {"missing_caption": 2, "missing_file": 1, "bad_caption_line": 1,
                                  "too_small": 1, "unsupported_mode": 1, "corrupt": 2}
    assert summary["converted"] == {"grayscale": 1, "alpha": 1, "other_mode": 1}
    assert sum(summary["written"].values()) == 5 == sum(summary["splits"].values())
    assert summary["splits"]["validation"] >= 1
    assert any("skipped" in m and "too_small" in m for m in logs)


def test_records_share_the_shapes_layout(built):
    _, path, _ = built
    builder = tfds.builder_from_directory(path)
    records_ = [r for split in ("train", "validation", "test")
                for r in builder.as_data_source(split)]
    by_caption = {r["caption"].decode(): r for r in records_}
    assert set(by_caption) == {"a red square", "gray noise", "nothing to see",
                               "a palette image", "a wide photo"}
    for r in records_:
        assert r["image"].shape == (32, 32, 3) and r["image"].dtype == np.uint8
        assert r["category"] == records.NONE_CATEGORY and len(r["objects"]["shape"]) == 0
    np.testing.assert_allclose(by_caption["a red square"]["image"].reshape(-1, 3).mean(0),
                               (200, 20, 20), atol=2)
    assert (by_caption["nothing to see"]["image"] == 255).all()
    gray = by_caption["gray noise"]["image"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


def test_load_split_and_tokenizer_from_config(built, src):
    data_dir, path, _ = built
    config = {"name": "folder", "data_dir": data_dir, "folder_name": "mine", "resolution": 32,
              "src": src}
    assert build.build_if_missing(config, log=lambda m: None) == path
    tok = pipeline.load_tokenizer(config)
    batch = next(pipeline.train_iterator(
        pipeline.load_split(config, "train"), global_batch_size=2, seed=0,
        transform=pipeline.ModelInputs(tok, 32), process_index=0, process_count=1))
    assert batch["image"].shape == (2, 32, 32, 3) and -1 <= batch["image"].min()
    assert "<unk>" not in " ".join(tok.decode(batch["text_ids"]))


def test_nothing_usable_is_a_clear_error_and_leaves_no_directory(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _save(src / "a.png", np.zeros((4, 4, 3), np.uint8))
    (src / "a.txt").write_text("tiny")
    data_dir = tmp_path / "data"
    with pytest.raises(ValueError, match="no usable captioned images"):
        build.build_folder(str(data_dir), str(src), "bad", 32)
    assert not os.path.exists(os.path.join(data_dir, folder.NAME))
    assert [p for p in os.listdir(data_dir) if p.startswith(".build-")] == []
