"""Stage caches are keyed by what they hold (the dataset's fingerprint), not where they lie: a
copied cache is reused as it is."""
import os
import shutil

import pytest

from imgsynth import stages, train_autoencoder
from imgsynth.data import build
from imgsynth.metrics import train_judge
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
