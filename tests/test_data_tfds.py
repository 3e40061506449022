"""Public TFDS datasets mapped by config (mocked: nothing is downloaded)."""
import importlib.util
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from imgsynth import cli
from imgsynth.data import build, mapped, pipeline, records
from imgsynth.data.spec import DataSpec

def _cifar(tmp_path, **overrides):
    return {"name": "tfds", "data_dir": str(tmp_path), "tfds_name": "cifar10",
            "image_key": "image", "label_key": "label", "resolution": 16, **overrides}


def test_label_template_becomes_the_caption(tmp_path, tfds_offline):
    with tfds_offline(num_examples=12):
        src = pipeline.load_split(_cifar(tmp_path), "train")
        assert len(src) == 12
        r = src[3]
        assert r["image"].shape == (16, 16, 3) and r["image"].dtype == np.uint8
        assert r["category"] == records.NONE_CATEGORY and len(r["objects"]["shape"]) == 0
        # Mocked from code, cifar10's class names are '0'..'9' (real data carries the names).
        names = tfds.builder("cifar10", data_dir=str(tmp_path)).info.features["label"].names
        assert r["caption"] in {f"a photo of a {n}" for n in names}

        tok = pipeline.load_tokenizer(_cifar(tmp_path))
        assert set(names) <= set(tok.vocab)
        assert build.build_if_missing(_cifar(tmp_path), log=lambda m: None) is None
        batches = pipeline.train_iterator(src, global_batch_size=4, seed=0,
                                          transform=pipeline.ModelInputs(tok, 16),
                                          process_index=0, process_count=1)
        batch = next(batches)
        assert batch["image"].shape == (4, 16, 16, 3)
        for caption in tok.decode(batch["text_ids"]):
            assert caption in {f"a photo of a {n}" for n in names}

        custom = pipeline.load_split(_cifar(tmp_path, caption_template="{label}, drawn"), "test")
        assert custom[0]["caption"].endswith(", drawn")


def test_class_names_fill_the_template_with_spaces_for_underscores():
    spec = DataSpec.of({"name": "tfds", "tfds_name": "cifar100", "label_key": "label",
                        "caption_template": "a {label} photo"})
    mapper = mapped.RecordMapper(spec, ["apple", "aquarium_fish"])
    record = mapper({"image": np.zeros((40, 30, 1), np.uint8), "label": np.int64(1)})
    assert record["caption"] == "a aquarium fish photo"
    assert record["image"].shape == (32, 32, 3)


def _coco_captions(tmp_path):
    return {"name": "tfds", "data_dir": str(tmp_path), "tfds_name": "coco_captions",
            "image_key": "image", "text_key": "captions/text", "resolution": 32,
            "text_max_len": 24}


def test_nested_text_key_takes_the_first_caption():
    spec = DataSpec.of({"name": "tfds", "tfds_name": "coco_captions", "image_key": "image",
                        "text_key": "captions/text"})
    record = {"image": np.zeros((20, 40, 3), np.uint8),
              "captions": {"text": np.array([b"a cat on a mat", b"a mat"], dtype=object)}}
    assert mapped.RecordMapper(spec)(record)["caption"] == "a cat on a mat"


def test_builder_that_imports_tensorflow_names_the_extra(tmp_path, tfds_offline):
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here: coco_captions's builder constructs")
    with tfds_offline(num_examples=2):
        with pytest.raises(cli.UsageError, match=r"coco_captions.*TensorFlow.*\.\[tf\]"):
            pipeline.load_split(_coco_captions(tmp_path), "train")


def test_text_key_with_nested_captions_and_vocabulary_file(tmp_path, tfds_offline):
    pytest.importorskip("tensorflow", reason="coco_captions's TFDS builder imports TensorFlow: "
                        "pip install -e '.[tf]'")
    config = _coco_captions(tmp_path)
    with tfds_offline(num_examples=6):
        src = pipeline.load_split(config, "train")
        r = src[0]
        assert r["image"].shape == (32, 32, 3)  # mocked images have random sizes
        assert isinstance(r["caption"], str) and r["caption"]
        assert build.build_if_missing(config, log=lambda m: None) is None  # not ours to build
        assert os.path.exists(build.vocab_path(config))
        tok = pipeline.load_tokenizer(config)
        assert tok.max_len == 24
        ids, _ = tok.encode([src[i]["caption"] for i in range(len(src))])
        assert tok.num_truncated == 0 and (ids != 1).all()  # no <unk>: vocabulary from train


def test_config_errors_are_clear(tmp_path, tfds_offline):
    with pytest.raises(ValueError, match="exactly one of text_key and label_key"):
        DataSpec.of({"name": "tfds", "tfds_name": "cifar10", "label_key": "label",
                     "text_key": "id"})
    with pytest.raises(ValueError, match="must contain"):
        DataSpec.of(_cifar(tmp_path, caption_template="a photo"))
    with pytest.raises(ValueError, match="name="):
        DataSpec.of({"name": "imagenet"})
    with tfds_offline(num_examples=2):
        src = pipeline.load_split(_cifar(tmp_path, image_key="img"), "train")
        with pytest.raises(KeyError, match="no field 'img'"):
            src[0]


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path, tfds_offline):
    with pytest.raises(FileNotFoundError, match=r"ArrayRecord.*TensorFlow.*\.\[tf\]"):
        pipeline.load_split(_cifar(tmp_path), "train")
