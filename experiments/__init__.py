"""Config files (big_vision style, loaded by path with `--config=experiments/NAME.py:ARGS`) and
experiment grids; a package so grids can build on each other (`from experiments.grids import
cpu_study`)."""
