"""A full disk, wherever it strikes (a file written whole, a metrics row, a stage's folder, a
checkpoint), is one line naming the path and its free space, exit 1; nothing half-written stays."""
import errno
import os

import jax.numpy as jnp
import pytest

from imgsynth import checkpoint as ckpt_lib, cli, io, loop


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullFile:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    write = _full


def test_a_file_written_whole_keeps_its_old_version_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    io.write_json(path, {"old": 1})
    monkeypatch.setattr(os, "fdopen", _FullFile)
    with pytest.raises(io.DiskFull, match=rf"{tmp_path}/eval\.json \(.* free\)"):
        io.write_json(path, {"new": 2})
    assert io.read_json(path) == {"old": 1}
    assert os.listdir(tmp_path) == ["eval.json"]   # no temporary file left


def test_a_metrics_row_and_a_stage_folder_name_their_path(tmp_path, monkeypatch):
    import builtins
    monkeypatch.setattr(builtins, "open", _FullFile)
    with pytest.raises(io.DiskFull, match="metrics.jsonl"):
        loop.MetricsLog(str(tmp_path)).write({"step": 1})
    with pytest.raises(io.DiskFull, match=f"{tmp_path}/stage "):
        io.write_dir(str(tmp_path / "stage"), {"weights.npz": b"x"})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == []   # the staged folder went with the error


def test_a_checkpoint_that_does_not_fit_is_refused_before_writing(tmp_path, monkeypatch):
    checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
    state = {"w": jnp.zeros((256, 256))}
    monkeypatch.setattr(io, "free_bytes", lambda path: 900)
    with pytest.raises(io.DiskFull, match=r"900 B free, about 262\.1 KB needed"):
        checkpointer.save(4, state)
    monkeypatch.undo()
    assert checkpointer.latest_step() is None and os.listdir(tmp_path / "checkpoints") == []
    checkpointer.close()


def test_a_disk_that_fills_during_a_save_loses_the_half_written_checkpoint(tmp_path, monkeypatch):
    checkpointer = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
    checkpointer.save(2, {"w": jnp.ones(3)})

    def half_save(step, **kwargs):
        os.makedirs(tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp" / "state")
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "w" at local file '
                         f'"{tmp_path}/checkpoints/{step}.orbax-checkpoint-tmp/state": '
                         "No space left on device [os_error_code='28']")
    monkeypatch.setattr(checkpointer.manager, "save", half_save)
    with pytest.raises(io.DiskFull, match="checkpoints"):
        checkpointer.save(4, {"w": jnp.ones(3)})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    checkpointer.close()


def test_the_command_line_says_it_in_one_line_exit_1(tmp_path, capsys, monkeypatch):
    def main(argv):
        raise RuntimeError("saving failed") from ValueError(
            f'Error writing at local file "{tmp_path}/run/checkpoints/8": No space left on device')
    monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
    assert cli.run(main, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no space left on the device of {tmp_path}")
    assert " free" in err[0]
    assert cli.run(main, [cli.VERBOSE_FLAG]) == 1
    assert "Traceback" in capsys.readouterr().err
    with pytest.raises(RuntimeError):   # any other fault keeps its traceback
        cli.run(lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")), [])


@pytest.mark.slow
def test_the_disk_full_drill(tmp_path):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
    import fault_drills
    result = fault_drills.disk_full_drill(str(tmp_path))
    if result["disk_full_one_line"] is None:
        pytest.skip(result["disk_full_skipped"])
    assert result == {"disk_full_one_line": True, "disk_full_rerun_done": True}
