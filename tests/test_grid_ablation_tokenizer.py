"""The tokenizer ablation grid: every tokenizer for both token paradigms, comparable runs."""
from launch import grid as grid_lib
from imgsynth.paradigms import token_model


def test_tokenizer_grid_covers_every_tokenizer_for_both_token_paradigms():
    grid = grid_lib.load("ablation_tokenizer")
    main = {(r.paradigm, r.size, r.budget) for r in grid_lib.load("cpu_study").runs}
    seen = {}
    for r in grid.runs:
        assert (r.paradigm, r.size, r.budget) in main          # compared with a main-grid run
        assert "-tokenizer=" in r.name
        seen[(r.paradigm, r.config.grid.ablation["tokenizer"])] = (
            token_model.codebook_size(r.config), token_model.factor_sizes(r.config))
    assert len(grid.runs) == 8 and {p for p, _ in seen} == {"maskgit", "ar"}
    assert seen[("ar", "lfq10")] == (1024, (1024,))
    assert seen[("ar", "lfq16")] == (65536, (256, 256))
    assert seen[("maskgit", "fsq8555")] == (1000, (1000,))
    assert seen[("maskgit", "fsq888555")] == (64000, (512, 125))
