"""Runs experiment grids: locally (parallel subprocesses), on a TPU pod (gcloud), or on SLURM.

    python -m launch --grid=experiments/grids/quickstart.py --workdir=DIR [--backend=...]

`launch.grid` turns a grid file into complete run configs; `launch.local`, `launch.tpu` and
`launch.slurm` run them through `python -m imgsynth.train` and `python -m imgsynth.evaluate`.
Nothing here imports a cloud library: the TPU backend drives the `gcloud` command line and the
SLURM backend uses submitit.
"""
