"""Experiment grids: one `sweep(add)` per file, run with `python -m launch --grid=NAME`."""
