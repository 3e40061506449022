"""The config of one run of a grid, for `imgsynth.train` / `launch.prepare`:

    python -m imgsynth.train --workdir=DIR \
        --config=launch/grid_config.py:grid=experiments/grids/quickstart.py,run=flow-T-1e+12

The grid file is expanded again and the named run's complete config returned, so the command line
stays short and a run is reproduced from (grid file, run name). `--config.x=v` flags still apply.
"""
from imgsynth.config import parse_arg
from launch import grid as grid_lib


def get_config(arg=None):
    args = parse_arg(arg, grid="", run="")
    if not args.grid or not args.run:
        raise ValueError("launch/grid_config.py needs `:grid=PATH,run=NAME`")
    return grid_lib.load(args.grid).run(args.run).config
