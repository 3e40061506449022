"""Shared defaults (flow-matching heads) — `experiments/base.py:size=S[,runlocal]`.

Every key of every config is listed by `imgsynth.config.default_config`; paradigm files adjust it.
"""
from imgsynth import config as config_lib


def get_config(arg=None):
    return config_lib.default_config("flow", arg)
