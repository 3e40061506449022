"""Masked autoregression on continuous KL latent tokens (random order, per-token flow-matching
head; MAR / Fluid) — `experiments/mar.py:size=S[,runlocal][,budget=1e15]`."""
from experiments import common


def get_config(arg=None):
    args = common.parse(arg)
    c = common.generator("mar", args)
    common.continuous_tokens(c, args.runlocal)
    c.sampler.steps = 12         # K: backbone passes, tokens filled on MaskGIT's cosine counts
    c.sampler.guidance = 2.0     # on the backbone's pass and the head's velocity
    return common.finish(c, args, arg)
