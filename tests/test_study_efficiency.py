"""benchmarks/study_efficiency.py on a fabricated finished grid whose processes' costs are known
(tests/fixtures/scaling_workdir.py): every figure equals its definition."""
import json
import os
import shutil
import sys

import pytest

from fixtures import scaling_workdir as fx
from imgsynth import io
from imgsynth.scaling import table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import study_efficiency  # noqa: E402


@pytest.fixture
def grid(tmp_path):
    return fx.make_workdir(str(tmp_path / "grid"))


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_efficiency_of_a_finished_grid(grid, capsys):
    assert study_efficiency.main([f"--workdir={grid}"]) == 0
    out = _last_json(capsys)
    done = [r for r in table.collect(grid).rows if r["status"] == "done"]
    train_s = sum(fx.train_seconds(r["train_flops"]) for r in done)
    flops = sum(r["train_flops"] for r in done)
    assert out["train_efficiency"] == pytest.approx(flops / (train_s * fx.PEAK_PER_CORE))
    assert fx.STEP_EFFICIENCY * 0.9 < out["train_efficiency"] < fx.STEP_EFFICIENCY
    evals = len(done) * fx.EVAL_S
    assert out["eval_share"] == pytest.approx(evals / (train_s + evals + fx.STAGE_CORE_S))
    assert out["wall_s"] == fx.WALL_S and out["runs"] == len(table.find_run_dirs(grid))
    assert out["start_to_first_step_s"] == pytest.approx(fx.STARTUP_S)
    assert (out["trained"], out["evaluated"], out["resumed"]) == (len(done), len(done), 0)
    assert study_efficiency.main([f"--workdir={grid}", "--peak_flops_per_core=2e12"]) == 0
    assert _last_json(capsys)["train_efficiency"] == pytest.approx(out["train_efficiency"] / 2)


def test_resumed_runs_and_grids_without_launch_records(grid, capsys):
    run = os.path.join(grid, "runs", "flow_S_1e15")
    status = io.read_status(run)
    status["timing"]["steps"] -= 3                      # its last process did not start at 0
    io.write_json(os.path.join(run, "status.json"), status)
    os.remove(os.path.join(grid, "launch_status.json"))
    assert study_efficiency.main([f"--workdir={grid}"]) == 0
    out = _last_json(capsys)
    assert out["resumed"] == 1 and out["launches"] == 0 and out["stage_core_s"] == 0
    longest = max(fx.train_seconds(r["train_flops"]) for r in table.collect(grid).rows
                  if r["status"] == "done")
    assert out["wall_s"] == pytest.approx(max(longest, fx.EVAL_S))   # first start to last end


def test_a_grid_without_records_is_refused(tmp_path, grid, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(grid, bare)
    for d in table.find_run_dirs(str(bare)):
        status = io.read_status(d)
        status.pop("timing", None)
        io.write_json(os.path.join(d, "status.json"), status)
    assert study_efficiency.main([f"--workdir={bare}"]) == 2
    assert "records its training time" in capsys.readouterr().err
    assert study_efficiency.main([f"--workdir={tmp_path / 'none'}"]) == 2
