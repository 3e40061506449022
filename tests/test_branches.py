"""Cooldown branches: a branch forks bit-exactly from its trunk and equals a standalone wsd run of
its budget; schedules; the grid's trunk → branches expansion; bad inputs refused before training."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from imgsynth import config as config_lib, optim, registry, schedules, train
from launch import grid as grid_lib

TINY = {"data.name": "synthetic", "data.synthetic_examples": 64, "global_batch_size": 8,
        "autoencoder.fsq_levels": (4, 4, 4, 4), "eval_examples": 16, "log_every_steps": 1,
        "eval_every_steps": 1000, "checkpoint_every_steps": 1000, "peak_flops_per_s": 1e11,
        "optimizer.warmup_steps": 2}


def per_step() -> float:
    c = config_lib.default_config("flow", "size=T,steps=1,global_batch_size=8")
    return registry.plan(c).flops_per_step


def family(steps=(10, 15), **kw) -> grid_lib.Grid:
    """flow T: one trunk and a branch per budget of `steps` optimizer steps."""
    budgets = [(n + 0.5) * per_step() for n in steps]

    def sweep(add):
        add(paradigm="flow", size="T", budgets=budgets, schedule="wsd_branches",
            overrides={**TINY, **kw.pop("overrides", {})}, **kw)
    return grid_lib.expand(sweep, name="branches")


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def state_at(workdir, step):
    tree = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step),
                                                           "state"))
    data = os.path.join(workdir, "checkpoints", str(step), "data")
    positions = [json.load(open(os.path.join(data, f))) for f in sorted(os.listdir(data))
                 if f.endswith(".json")]
    assert positions
    return jax.tree.leaves(tree), positions


def assert_same_state(a, b):
    """Params, EMA, optimizer state and step equal bit for bit; the same data position."""
    (leaves_a, data_a), (leaves_b, data_b) = a, b
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert data_a == data_b


def test_expansion_trunk_then_branches():
    g = family(steps=(10, 15, 30))
    assert [(r.name, r.role) for r in g.runs] == [
        ("flow-T-trunk", "trunk"), (g.runs[1].name, "branch"), (g.runs[2].name, "branch"),
        (g.runs[3].name, "branch")]
    trunk, *branches = g.runs
    assert [b.steps for b in branches] == [10, 15, 30]
    assert [b.fork_step for b in branches] == [8, 12, 24]         # 20 % cooldown
    assert trunk.steps == 24 and trunk.config.optimizer.schedule == "constant"
    assert registry.plan(trunk.config).keep_steps == (8, 12, 24)  # fork checkpoints kept
    for b in branches:
        assert b.trunk == "flow-T-trunk" and b.config.optimizer.schedule == "wsd"
        assert b.config.fork_from.to_dict() == {"workdir": "../flow-T-trunk", "step": b.fork_step}
        assert b.train_flops == b.steps * b.flops_per_step          # the compute its model saw
        assert b.own_flops == (b.steps - b.fork_step) * b.flops_per_step
    # One warm-up for the whole family (the smallest budget's), so rates agree up to every fork.
    assert {r.config.optimizer.warmup_steps for r in g.runs} == {1}
    assert "computed (cooldown branches share their trunks)" in grid_lib.plan_table(g.runs)


@pytest.mark.slow
def test_branch_forks_bit_exactly_and_equals_a_standalone_wsd_run(tmp_path):
    trunk, branch = family(steps=(10,)).runs
    work = tmp_path / "runs"
    train.train(trunk.config, str(work / trunk.name))
    train.train(branch.config, str(work / branch.name))
    alone = branch.config.copy_and_resolve_references()
    alone.fork_from.workdir = ""
    alone.keep_flops = ((branch.fork_step + 0.5) * branch.flops_per_step,)   # keep the fork step
    train.train(alone, str(tmp_path / "alone"))

    fork = branch.fork_step
    # The standalone run at the fork step is the trunk's checkpoint there: same rates so far.
    assert_same_state(state_at(str(work / trunk.name), fork), state_at(str(tmp_path / "alone"),
                                                                       fork))
    # The branch restored params, EMA, optimizer state, step and data position from it, so its
    # end equals the standalone run's end, bit for bit.
    assert_same_state(state_at(str(work / branch.name), branch.steps),
                      state_at(str(tmp_path / "alone"), branch.steps))
    b, a = rows(str(work / branch.name)), rows(str(tmp_path / "alone"))
    lr = lambda rs: [(r["step"], r["train/lr"]) for r in rs if "train/lr" in r]   # noqa: E731
    assert lr(b) == lr(a)                                   # the learning-rate path
    assert [r["step"] for r in b if "train/loss" in r] == list(range(1, branch.steps + 1))
    loss = lambda rs: {r["step"]: r["train/loss"] for r in rs if "train/loss" in r}   # noqa: E731
    assert loss(b) == loss(a)
    assert b[-1]["flops/train_cumulative"] == branch.train_flops   # train_flops is the budget's
    assert b[0]["n_params/all"] > 0                              # the trunk's history, copied
    assert lr(b)[-1][1] == pytest.approx(alone.optimizer.lr * alone.optimizer.min_lr_ratio)


def test_wsd_schedule_shapes():
    opt = config_lib.default_config("flow", "size=T,steps=100").optimizer
    opt.update(schedule="wsd", warmup_steps=10, warmup_fraction=0.0, lr=1.0, min_lr_ratio=0.1)
    for shape, mid in (("linear", 0.55), ("1-sqrt", 1 - 0.9 * np.sqrt(0.5))):
        opt.decay_shape = shape
        lr = np.asarray(optim.schedule(opt, 100)(np.arange(100)))
        np.testing.assert_allclose(lr[:9], np.arange(1, 10) / 10, rtol=1e-6)   # warm-up
        assert np.all(lr[9:80] == 1.0)                         # constant until the cooldown
        assert lr[89] == pytest.approx(mid, rel=1e-5)          # halfway down the 20 steps
        assert lr[99] == pytest.approx(0.1, rel=1e-6)          # the floor at the last update
    opt.update(warmup_steps=100, warmup_fraction=0.1)
    assert schedules.warmup_steps(opt, 50) == 5                    # capped at a tenth of the run
    opt.decay_shape = "cubic"
    with pytest.raises(ValueError, match="decay_shape='cubic'"):
        optim.schedule(opt, 100)


@pytest.mark.parametrize("kw, message", [
    (dict(steps=(6, 15), overrides={"optimizer.warmup_fraction": 0.0, "optimizer.warmup_steps": 5,
                                    "optimizer.decay_fraction": 0.5}),
     r"budget .* \(6 steps\) is less than warm-up \(5\) \+ cooldown \(3"),
    (dict(trunk_budget=1.0), "beyond the trunk's budget"),
    (dict(overrides={"fork_from.step": 3}), "set by the grid itself"),
])
def test_bad_grids(kw, message):
    with pytest.raises(grid_lib.GridError, match=message):
        family(**kw)


@pytest.mark.slow
def test_bad_forks_fail_before_training(tmp_path):
    trunk, branch = family(steps=(10,)).runs
    work = tmp_path / "runs"
    d = str(work / branch.name)
    with pytest.raises(config_lib.ConfigError, match="no run in .*flow-T-trunk.*train the trunk"):
        train.train(branch.config, d)
    train.train(trunk.config, str(work / trunk.name))
    other = branch.config.copy_and_resolve_references()
    other.optimizer.b2 = 0.99
    with pytest.raises(config_lib.ConfigError, match=r"differs from this run in \['optimizer.b2'\]"):
        train.train(other, str(work / "other"))
    late = branch.config.copy_and_resolve_references()
    late.fork_from.step = 9
    with pytest.raises(config_lib.ConfigError, match="outside this run's constant-rate phase"):
        train.train(late, str(work / "late"))
    # Equal configs whose warm-ups still differ: a share of runs of different lengths.
    fake = tmp_path / "fake" / "flow-T-trunk"
    os.makedirs(fake / "checkpoints" / "8")
    old = json.load(open(work / trunk.name / "config.json"))
    old["optimizer"].update(warmup_steps=100, warmup_fraction=0.3)
    (fake / "config.json").write_text(json.dumps(old))
    warm = train.resolved(branch.config, registry.plan(branch.config))
    warm.optimizer.update(warmup_steps=100, warmup_fraction=0.3)
    with pytest.raises(config_lib.ConfigError, match=r"learning rate differs .* before the fork "
                                                     r"\(step 0"):
        train.fork_source(warm, str(tmp_path / "fake" / "warm"))
    longer = trunk.config.copy_and_resolve_references()
    longer.fork_budgets = (*longer.fork_budgets, 40 * per_step())
    with pytest.raises(config_lib.ConfigError, match="beyond the trunk's 8 steps"):
        registry.plan(longer)
    assert not any(os.path.exists(work / n) for n in ("other", "late"))


def test_results_table_reports_the_real_cost(tmp_path):
    from imgsynth.scaling import table
    for name, fork, steps in (("trunk", 0, 8), ("branch", 8, 10), ("alone", 0, 10)):
        d = tmp_path / "runs" / name
        os.makedirs(d)
        (d / "config.json").write_text(json.dumps({
            "paradigm": "flow", "size": "T", "fork_from": {"workdir": "../trunk" if fork else "",
                                                           "step": fork}}))
        (d / "status.json").write_text(json.dumps({"status": "done", "step": steps}))
        (d / "metrics.jsonl").write_text("".join(json.dumps(
            {"step": s, "flops/train_per_step": 2.0, "flops/train_cumulative": 2.0 * s}) + "\n"
            for s in range(steps + 1)))
    rows = {r["run"]: r for r in table.collect(str(tmp_path)).rows}
    assert [rows[f"runs/{n}"]["train_flops"] for n in ("trunk", "branch", "alone")] == [16, 20, 20]
    assert [rows[f"runs/{n}"]["run_flops"] for n in ("trunk", "branch", "alone")] == [16, 4, 20]
