"""Next-token prediction (autoregressive, raster order) on LFQ tokens — `experiments/ar.py:size=S[,runlocal][,budget=1e15]`."""
from experiments import common


def get_config(arg=None):
    args = common.parse(arg)
    c = common.generator("ar", args)
    common.tokens(c)
    c.sampler.steps = 0          # one step per token; not a free parameter
    c.sampler.guidance = 2.0
    c.sampler.temperature = 1.0
    c.sampler.top_k = 0          # 0: off
    c.sampler.top_p = 1.0        # 1.0: off
    return common.finish(c, args, arg)
