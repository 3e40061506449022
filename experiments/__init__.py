"""Run configs (ml_collections, `get_config(arg)`) and the grids that sweep them."""
