"""Next-token prediction on continuous KL latent tokens (raster order, per-token flow-matching
head) — `experiments/ar_continuous.py:size=S[,runlocal][,budget=1e15]`."""
from experiments import common


def get_config(arg=None):
    args = common.parse(arg)
    c = common.generator("ar_continuous", args)
    common.continuous_tokens(c, args.runlocal)
    c.sampler.steps = 0          # one step per token; not a free parameter
    c.sampler.guidance = 2.0     # on the backbone's pass and the head's velocity
    return common.finish(c, args, arg)
