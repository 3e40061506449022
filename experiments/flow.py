"""Flow matching on KL latents — `experiments/flow.py:size=S[,runlocal][,budget=1e15]`."""
from imgsynth import config as config_lib


def get_config(arg=None):
    return config_lib.default_config("flow", arg)
