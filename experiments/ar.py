"""Next-token prediction (autoregressive, raster order) on LFQ tokens — `experiments/ar.py:size=S[,runlocal][,budget=1e15]`."""
from imgsynth import config as config_lib


def get_config(arg=None):
    return config_lib.default_config("ar", arg)
