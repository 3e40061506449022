"""Masked-token prediction (MaskGIT) on LFQ tokens — `experiments/maskgit.py:size=S[,runlocal][,budget=1e15]`."""
from imgsynth import config as config_lib


def get_config(arg=None):
    return config_lib.default_config("maskgit", arg)
