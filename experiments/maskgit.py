"""Masked-token prediction (MaskGIT) on LFQ tokens — `experiments/maskgit.py:size=S[,runlocal][,budget=1e15]`."""
from experiments import common


def get_config(arg=None):
    args = common.parse(arg)
    c = common.generator("maskgit", args)
    common.tokens(c)
    c.sampler.steps = 12
    c.sampler.guidance = 2.0
    c.sampler.temperature = 1.0          # token sampling temperature
    c.sampler.choice_temperature = 4.5   # Gumbel noise on confidences, annealed to 0
    return common.finish(c, args, arg)
