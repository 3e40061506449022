"""The shapes builder: deterministic bytes, consistent records, build-once semantics."""
import glob
import json
import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from imgsynth.data import build, scene as S, shapes
from imgsynth.data.scene import Scene


def _config(seed=0, name="r16_test"):
    return shapes.ShapesConfig(name=name, resolution=16, num_train=60, num_validation=12,
                               num_test=0, seed=seed)


def _record_files(path):
    return {os.path.basename(f): open(f, "rb").read()
            for f in sorted(glob.glob(os.path.join(path, "*.array_record*")))}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build.build_shapes(str(tmp_path_factory.mktemp("a")), _config())


def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    again = build.build_shapes(str(tmp_path / "b"), _config())
    other = build.build_shapes(str(tmp_path / "c"), _config(seed=1))
    files = _record_files(built)
    assert set(files) == {"captioned_shapes-train.array_record-00000-of-00001",
                          "captioned_shapes-validation.array_record-00000-of-00001"}
    assert files == _record_files(again)
    assert files != _record_files(other)
    assert open(os.path.join(built, "vocab.json")).read() == \
        open(os.path.join(again, "vocab.json")).read()


def test_worker_processes_write_the_same_bytes(built, tmp_path):
    parallel = build.build_shapes(str(tmp_path), _config(), num_workers=2, chunk_size=16)
    assert _record_files(parallel) == _record_files(built)


def test_records_hold_image_caption_category_and_a_scene_that_satisfies_it(built):
    builder = tfds.builder_from_directory(built)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == \
        {"train": 60, "validation": 12}
    src = builder.as_data_source("train")
    categories = set()
    for i in range(len(src)):
        r = src[i]
        assert r["image"].shape == (16, 16, 3) and r["image"].dtype == np.uint8
        scene = Scene.from_record(r["objects"])
        caption = r["caption"].decode()
        assert S.satisfies(scene, caption), (caption, scene)
        categories.add(S.CATEGORIES[r["category"]])
        assert r["image"].std() > 5  # something drawn on the background
    assert len(categories) >= 4 and "none" not in categories
    summary = json.load(open(os.path.join(built, build.SUMMARY_FILE)))
    assert summary["splits"] == {"train": 60, "validation": 12}


def test_fast_record_source_decodes_exactly_like_tfds(built):
    from imgsynth.data.records import RecordSource
    reference = tfds.builder_from_directory(built).as_data_source("validation")
    fast = RecordSource(built, "validation")
    assert len(fast) == len(reference) == 12
    for a, b in zip(reference, fast.__getitems__(range(12))):
        np.testing.assert_array_equal(a["image"], b["image"])
        assert (a["caption"], a["category"]) == (b["caption"], b["category"])
        for key, value in a["objects"].items():
            np.testing.assert_array_equal(np.asarray(value), b["objects"][key])
            assert np.asarray(value).dtype == b["objects"][key].dtype


@pytest.mark.parametrize("shape", [(16, 16), (64, 64), (3, 7)])
def test_png_bytes_decode_to_the_image(shape):
    import io

    from PIL import Image

    from imgsynth.data.render import png_bytes
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(image))) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), image)


def test_named_configs_cover_resolutions_and_sizes():
    configs = {c.name: c for c in shapes.CaptionedShapes.BUILDER_CONFIGS}
    for r in (16, 32, 64):
        assert configs[f"r{r}"].resolution == r and configs[f"r{r}"].num_train >= 100_000
        assert configs[f"r{r}"].num_validation >= 5_000 and configs[f"r{r}"].num_test >= 5_000
        assert configs[f"r{r}_small"].num_train == 4_000
        assert configs[f"r{r}_tiny"].num_train == 256
    assert shapes.CaptionedShapes.DEFAULT_CONFIG_NAME == "r32"


def test_second_build_does_nothing_and_says_so(built):
    messages = []
    before = os.path.getmtime(os.path.join(built, "dataset_info.json"))
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(built)))
    assert build.build_shapes(data_dir, _config(), log=messages.append) == built
    assert messages == [f"{built} is complete; nothing to do"]
    assert os.path.getmtime(os.path.join(built, "dataset_info.json")) == before


def test_concurrent_build_if_missing_builds_once(tmp_path):
    config = {"name": "shapes", "data_dir": str(tmp_path), "builder_config": "r16_tiny",
              "resolution": 16}
    logs, errors = [], []

    def call():
        try:
            build.build_if_missing(config, num_workers=1, log=logs.append)
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(m.startswith("built ") for m in logs) == 1
    assert sum("completed by another process" in m for m in logs) == 1
    final = build.dataset_dir(config)
    assert build.is_complete(final)
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".build-")]
    assert leftovers == []


def test_cli_builds_then_reports_complete(tmp_path, capsys):
    args = ["--dataset=shapes", f"--data_dir={tmp_path}", "--config=r16_tiny"]
    build.main(args)
    build.main(args)
    out = capsys.readouterr().out
    assert "built " in out and out.rstrip().endswith("is complete; nothing to do")


def test_bad_config_fails_early(tmp_path):
    with pytest.raises(ValueError, match="is 32 px but resolution=16"):
        build.build_if_missing({"name": "shapes", "data_dir": str(tmp_path),
                                "builder_config": "r32", "resolution": 16})
    with pytest.raises(ValueError, match="not one of"):
        build.build_if_missing({"name": "shapes", "data_dir": str(tmp_path),
                                "builder_config": "r32_huge"})
