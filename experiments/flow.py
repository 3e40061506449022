"""Flow matching (rectified flow) on KL latents — `experiments/flow.py:size=S[,runlocal][,budget=1e15]`."""
from experiments import common


def get_config(arg=None):
    args = common.parse(arg)
    c = common.generator("flow", args)
    c.autoencoder.kind = "kl"
    c.model.patch_size = 1             # latent cells per side folded into one image token
    c.sampler.steps = 16 if args.runlocal else 50
    c.sampler.method = "euler"         # or "heun"
    c.sampler.guidance = 2.0
    return common.finish(c, args, arg)
