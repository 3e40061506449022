"""Stage caches are keyed by what they hold (the dataset's fingerprint, the judge's format, the
instruments behind a cached ceiling), not where they lie: a copied cache is reused as it is."""
import os
import shutil
from types import SimpleNamespace

import pytest

from imgsynth import stages, train_autoencoder
from imgsynth.data import build
from imgsynth.metrics import instruments as instruments_lib, judge as judge_lib, train_judge
from test_pipeline import tiny


def small(cache):
    c = tiny("flow", cache)
    c.autoencoder.train_steps, c.instruments.judge_steps = 2, 2
    return c


@pytest.mark.slow
def test_a_copied_cache_is_reused_without_rebuilding(tmp_path, monkeypatch):
    c = small(str(tmp_path / "a"))
    ae = stages.autoencoder(c)                  # builds the dataset, trains the autoencoder
    judge = stages.judge(c)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")               # nothing may still point at the old place

    def rebuilt(*args, **kwargs):
        raise AssertionError("a stage was rebuilt")
    ensure = build._ensure
    monkeypatch.setattr(build, "_ensure", lambda path, *a, **k: (
        ensure(path, *a, **k) if build.is_complete(path) else rebuilt()))
    monkeypatch.setattr(train_autoencoder, "train", rebuilt)
    monkeypatch.setattr(train_judge, "train_judge", rebuilt)
    moved = small(str(tmp_path / "b"))
    assert stages.autoencoder(moved) == ae.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert stages.judge(moved) == judge.replace(str(tmp_path / "a"), str(tmp_path / "b"))


def test_the_fingerprint_follows_the_records_not_the_path(tmp_path):
    path = stages.dataset(small(str(tmp_path / "a")))
    first = build.fingerprint(path)
    os.remove(os.path.join(path, build.FINGERPRINT_FILE))
    assert build.fingerprint(path) == first                 # hashed again: the same
    with open(os.path.join(path, build.VOCAB_FILE), "a") as f:
        f.write(" ")
    os.remove(os.path.join(path, build.FINGERPRINT_FILE))
    assert build.fingerprint(path) != first
    with pytest.raises(FileNotFoundError):
        build.fingerprint(str(tmp_path / "nothing"))


def test_a_judge_trained_to_older_rules_is_not_reused(tmp_path):
    c = small(str(tmp_path / "a"))
    path = stages.judge(c)
    assert os.path.basename(path).endswith(f"-v{judge_lib.FORMAT}")
    old = path[:-len(f"-v{judge_lib.FORMAT}")]              # where a judge before the format lay
    shutil.move(path, old)
    assert stages.judge(c) == path and os.path.isdir(old)  # trained anew, the old one untouched


def test_cached_ceilings_follow_the_instruments():
    def identity(judge_info, alignment_info={"retrieval_accuracy": 0.5}):
        return instruments_lib.Instruments(
            None, {}, "", None, SimpleNamespace(info=alignment_info),
            judge=None if judge_info is None else SimpleNamespace(info=judge_info))._identity()
    assert identity({"ceiling": 0.99}) == identity({"ceiling": 0.99})
    assert len({identity({"ceiling": 0.99}), identity({"ceiling": 0.99, "format": 2}),
                identity(None), identity(None, {"retrieval_accuracy": 0.6})}) == 4
