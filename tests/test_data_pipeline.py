"""The grain pipeline: exact resume, per-process shards of one global stream, padded eval."""
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from imgsynth import sharding
from imgsynth.data import build, pipeline, scene as S, shapes
from imgsynth.data.scene import Scene
from imgsynth.data.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("data"))
    config = shapes.ShapesConfig(name="r16_pipe", resolution=16, num_train=50,
                                 num_validation=21, num_test=0)
    path = build.build_shapes(data_dir, config, log=lambda m: None)
    builder = tfds.builder_from_directory(path)
    tok = ByteTokenizer(max_len=80)  # exact round trip of every caption
    return builder.as_data_source("train"), builder.as_data_source("validation"), tok


def _it(src, tok, **kw):
    kw.setdefault("process_index", 0)
    kw.setdefault("process_count", 1)
    return pipeline.train_iterator(src, seed=3, transform=pipeline.ModelInputs(tok, 16), **kw)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_restored_iterator_yields_exactly_the_uninterrupted_batches(data):
    src, _, tok = data
    reference = _it(src, tok, global_batch_size=8)
    expected = [next(reference) for _ in range(12)]  # 96 > 50: crosses an epoch boundary
    it = _it(src, tok, global_batch_size=8)
    for _ in range(5):
        next(it)
    state = it.get_state()
    resumed = _it(src, tok, global_batch_size=8)
    resumed.set_state(state)
    for want in expected[5:]:
        assert _same(next(resumed), want)
    assert not _same(expected[0], expected[1])


def test_epochs_are_reshuffled_and_cover_the_data(data):
    src, _, tok = data
    it = _it(src, tok, global_batch_size=10, num_epochs=2)
    batches = list(it)
    assert len(batches) == 10
    first = np.concatenate([b["text_ids"] for b in batches[:5]])
    second = np.concatenate([b["text_ids"] for b in batches[5:]])
    assert sorted(map(bytes, first)) == sorted(map(bytes, second))  # same records
    assert not np.array_equal(first, second)  # different order


def test_process_shards_together_make_the_global_batch(data):
    src, _, tok = data
    whole = _it(src, tok, global_batch_size=8)
    shards = [_it(src, tok, global_batch_size=8, process_index=p, process_count=2)
              for p in range(2)]
    for _ in range(3):
        g = next(whole)
        parts = [next(s) for s in shards]
        assert parts[0]["image"].shape[0] == 4
        interleaved = np.stack([parts[0]["text_ids"], parts[1]["text_ids"]], 1).reshape(8, -1)
        np.testing.assert_array_equal(interleaved, g["text_ids"])


def test_eval_batches_pad_and_mask_and_repeat_identically(data):
    _, val, tok = data
    kw = dict(global_batch_size=8, transform=pipeline.ModelInputs(tok, 16, include_scene=True),
              process_index=0, process_count=1)
    batches = list(pipeline.eval_batches(val, **kw))
    assert [b["valid"].sum() for b in batches] == [8, 8, 5]
    assert all(b["image"].shape == (8, 16, 16, 3) for b in batches)
    again = list(pipeline.eval_batches(val, **kw))
    assert all(_same(a, b) for a, b in zip(batches, again))
    captions = tok.decode(np.concatenate([b["text_ids"] for b in batches])[:21])
    assert captions == [val[i]["caption"].decode() for i in range(21)]
    first = batches[0]
    scene = Scene.from_record({k: first[f"scene_{k}"][0][first[f"scene_{k}"][0] >= 0]
                               for k in ("shape", "color", "size", "row", "col")})
    assert S.satisfies(scene, captions[0])
    limited = list(pipeline.eval_batches(val, num_examples=3, **kw))
    assert len(limited) == 1 and limited[0]["valid"].tolist() == [True] * 3 + [False] * 5
    halves = [list(pipeline.eval_batches(val, **{**kw, "process_index": p, "process_count": 2}))
              for p in range(2)]
    assert sum(b["valid"].sum() for h in halves for b in h) == 21
    assert len(halves[0]) == len(halves[1]) == 3


def test_batches_that_do_not_divide_fail_early(data):
    src, _, tok = data
    with pytest.raises(ValueError, match="does not divide over 3 processes"):
        _it(src, tok, global_batch_size=8, process_index=0, process_count=3)
    mesh = sharding.make_mesh((-1, 1, 1))
    with pytest.raises(ValueError, match="8 data-parallel devices"):
        _it(src, tok, global_batch_size=12, mesh=mesh)
    with pytest.raises(ValueError, match="num_examples"):
        pipeline.eval_batches(src, global_batch_size=8, num_examples=1000, process_index=0,
                              process_count=1)


def test_batch_goes_to_devices_sharded_over_the_mesh(data):
    src, _, tok = data
    mesh = sharding.make_mesh((-1, 1, 1))
    batch = next(_it(src, tok, global_batch_size=16, mesh=mesh))
    arrays = sharding.to_global(batch, mesh)
    assert arrays["image"].shape == (16, 16, 16, 3)
    assert len(arrays["image"].addressable_shards) == jax.device_count() == 8
    np.testing.assert_array_equal(np.asarray(arrays["text_ids"]), batch["text_ids"])


def test_load_split_requires_a_built_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_if_missing"):
        pipeline.load_split({"name": "shapes", "data_dir": str(tmp_path),
                             "builder_config": "r16_tiny", "resolution": 16}, "train")


def test_config_data_as_configdict_is_read_and_checked(tmp_path):
    import ml_collections
    from imgsynth.data.spec import DataSpec
    config = ml_collections.ConfigDict(dict(
        name="shapes", data_dir=str(tmp_path), resolution=16, builder_config="r16_tiny",
        text_max_len=16, tokenizer="word", src="", folder_name="", tfds_name="",
        image_key="image", text_key="", label_key="", caption_template="a photo of a {label}",
        some_key_for_another_stage=1))
    spec = DataSpec.of(config)
    assert (spec.name, spec.resolution, spec.shapes_config) == ("shapes", 16, "r16_tiny")
    config.tokenizer = "sentencepiece"
    with pytest.raises(ValueError, match="tokenizer='sentencepiece'"):
        DataSpec.of(config)
    config.tokenizer, config.data_dir = "word", ""
    with pytest.raises(ValueError, match="data_dir is required"):
        DataSpec.of(config)
