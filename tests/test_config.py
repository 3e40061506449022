import pytest

from imgsynth import config as config_lib, registry


def test_parse_arg_types_and_flags():
    c = config_lib.parse_arg("size=M,runlocal,budget=1e15,steps=3", size="S", runlocal=False,
                             budget=0.0, steps=0)
    assert (c.size, c.runlocal, c.budget, c.steps) == ("M", True, 1e15, 3)


@pytest.mark.parametrize("arg, match", [("sise=S", "unknown config argument 'sise'"),
                                        ("steps=abc", "expected an integer"),
                                        ("size", "needs a value")])
def test_parse_arg_errors(arg, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.parse_arg(arg, size="S", steps=0)


def test_runlocal_is_tiny_and_size_explicit_wins():
    c = config_lib.default_config("flow", "runlocal")
    assert c.size == "T" and c.model.width == registry.SIZES["T"].width
    assert config_lib.default_config("flow", "runlocal,size=XS").model.width == 128


def test_durations_convert_in_one_place():
    c = config_lib.default_config("flow", "size=T,global_batch_size=8")
    c.total_steps = None
    c.total_examples = 100
    assert config_lib.resolve_steps(c, 1e6) == 12
    c.total_examples, c.total_flops = None, 8e6 * 5.5
    assert config_lib.resolve_steps(c, 1e6) == 5


def test_duration_errors():
    c = config_lib.default_config("flow", "size=T")
    c.total_flops = 1.0
    with pytest.raises(config_lib.ConfigError, match="exactly one"):
        config_lib.resolve_steps(c, 1e6)
    c.total_steps = None
    with pytest.raises(config_lib.ConfigError, match="less than one training step"):
        config_lib.resolve_steps(c, 1e6)


def test_validate_batch_and_heads():
    c = config_lib.default_config("flow", "size=T,global_batch_size=12")
    with pytest.raises(config_lib.ConfigError, match="not divisible by the 8"):
        config_lib.validate(c, data_parallel=8)
    c.global_batch_size = 16
    config_lib.validate(c, data_parallel=8)
    with pytest.raises(config_lib.ConfigError, match="'tensor' axis \\(4\\) must divide"):
        config_lib.validate(c, data_parallel=2, tensor_parallel=4)
    c.model.heads = 3
    with pytest.raises(config_lib.ConfigError, match="does not divide model.width"):
        config_lib.validate(c, data_parallel=8)


def test_unknown_paradigm_and_size():
    with pytest.raises(KeyError, match="unknown size"):
        config_lib.default_config("flow", "size=Q")
    with pytest.raises(config_lib.ConfigError, match="no experiments/diffusionx.py"):
        config_lib.default_config("diffusionx")


def test_budget_planner_rounds_down():
    c = config_lib.default_config("flow", "size=T,global_batch_size=16")
    per_step = registry.paradigm_module(c).model_cost(c).train_flops_per_example * 16
    assert registry.steps_for_budget(c, per_step * 7.9) == 7
