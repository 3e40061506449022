"""Experiment grids: a grid file's `sweep(add)` expanded into complete, named run configs.

A grid file is plain Python (big_vision sweeps):

    def sweep(add):
        for paradigm in ("flow", "maskgit", "ar"):
            for budget in (3e11, 1e12):
                add(paradigm=paradigm, size="T", budget=budget,
                    overrides={"optimizer.lr": 1e-3},        # dotted config keys
                    ablation={"ema": "off"})                 # label; omit for main-grid runs

Each `add` becomes `default_config(paradigm, "size=..,budget=..[,runlocal]")`, then the overrides,
then the command line's `--set KEY=VALUE` overrides (every run of the grid, e.g. pointing it at a
dataset: `--set data.name=folder --set data.folder_name=NAME`; they reach the programs the
launcher starts through the IMGSYNTH_GRID_SET environment variable), then `config.grid = {name, budget, ablation}` and `config.keep_flops` = the grid's budgets below
this run's (checkpoints kept there give the intermediate points of the curves). Runs are named
`<paradigm>-<size>-<budget:.0e>[-<ablation>][-s<seed>]`; two runs with one name are an error.

`add(..., seeds=(0, 1, 2))` replicates the run once per seed (the config's `seed`: parameter
initialisation, data order, sampling noise); a seed other than 0 is named by a `-s<seed>` suffix,
so a grid without `seeds=` keeps its names. The report averages replicates (imgsynth/scaling/
replicates.py).

`add(paradigm=, size=, budgets=[...], schedule="wsd_branches")` is one trunk and one cooldown
branch per budget (Hägele et al. 2024): the trunk `<paradigm>-<size>-trunk[-<ablation>]` trains
at constant rate and keeps checkpoints where each budget's cooldown begins; each branch, named
like a run of its budget, starts there (`fork_from`) and runs the wsd schedule of its budget.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import argparse
import ast

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRIDS_DIR = os.path.join(REPO_ROOT, "experiments", "grids")

# Keys the grid itself decides; overriding them would make a run disagree with its name or budget.
RESERVED_KEYS = ("paradigm", "size", "runlocal", "grid", "keep_flops", "total_steps",
                 "total_examples", "total_flops", "fork_budgets", "fork_from", "seed")
BRANCHES = "wsd_branches"   # add(schedule=...): one trunk, a cooldown branch per budget

# Achieved training FLOP/s of a whole 2-core CPU machine, by size, for ETAs: twice what one
# training process on one core reaches while another runs on the other (--parallel=2), global
# batch 32, logging, checkpoints and in-training evals included (S: 26 GFLOP/s a core measured in
# cpu_study's trunks; the update step alone reaches T 14.6, XS 23.5-25.8, S 32.9 GFLOP/s a core,
# benchmarks/backbone_throughput.py). Small widths use the cores poorly. `--flops_per_s`
# replaces these.
CPU_FLOPS_PER_S = {"T": 25e9, "XS": 40e9, "S": 52e9, "M": 60e9}
# Unrolled layers (model.scan_layers=False) on a CPU: update steps 14-19 % shorter at T, XS and S
# (flow and next-token, batch 32, one core each, both cores busy).
CPU_UNROLLED_SPEEDUP = 1.15
# Per-run seconds besides the update steps on a CPU (whole machine): start-up ~17 s of one core
# with the update step in the compilation cache (~40 s compiling it), the last eval loss and
# checkpoint.
CPU_TRAIN_OVERHEAD_S = 25.0
# A run's evaluation on a CPU: start-up, restoring, compiling and the metrics, then sampling
# eval.num_samples images per evaluated weights (EMA; raw: eval.raw_samples of them) at an
# inference rate of the whole machine (measured with imgsynth.evaluate, one run per core;
# docs/benchmarks.md).
CPU_EVAL_OVERHEAD_S = 20.0
CPU_SAMPLE_FLOPS_PER_S = 98e9   # flow matching at S: 1.12 images/s of 43.8 GFLOP on one core


OVERRIDES_ENV = "IMGSYNTH_GRID_SET"


class GridError(ValueError):
    """A grid that cannot be expanded; raised before anything runs."""


def parse_set(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` → (dotted key, Python literal, or the text itself: `data.name=folder`)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise GridError(f"--set {item!r}: expected KEY=VALUE, e.g. data.folder_name=mine")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return key.strip(), value


def command_line_overrides() -> dict:
    """The `--set` overrides of this process (and of the launcher that started it)."""
    return json.loads(os.environ.get(OVERRIDES_ENV) or "{}")


class SetOverride(argparse.Action):
    """`--set KEY=VALUE` (repeatable): an override for every run of the grid, recorded in the
    environment so that the stage, training and evaluation programs the launcher starts expand
    the grid the same way."""

    def __call__(self, parser, namespace, value, option_string=None):
        try:
            key, parsed = parse_set(value)
        except GridError as e:
            parser.error(str(e))
        os.environ[OVERRIDES_ENV] = json.dumps({**command_line_overrides(), key: parsed})
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), value])


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action=SetOverride, metavar="KEY=VALUE", default=[],
                        help="override a config key in every run (repeatable), e.g. --set "
                             "data.name=folder --set data.folder_name=NAME --set "
                             "data.data_dir=DIR; see README 'Your own data'")


@dataclasses.dataclass(frozen=True)
class Run:
    """One (paradigm, size, budget[, ablation]) point of a grid, with its complete config."""
    name: str
    paradigm: str
    size: str
    budget: float
    ablation: dict
    overrides: dict
    config: ml_collections.ConfigDict
    steps: int
    flops_per_step: float
    params: int
    seed: int = 0
    role: str = ""           # "trunk", "branch" or "" (a run of its own)
    trunk: str = ""          # a branch: its trunk's run name
    fork_step: int = 0       # a branch: the trunk step it starts from
    evaluate: bool = True    # sample and score it once trained (a trunk never is)

    @property
    def train_flops(self) -> float:
        """FLOPs the run's model has seen at its end: whole steps, so at most the budget."""
        return self.steps * self.flops_per_step

    @property
    def own_flops(self) -> float:
        """FLOPs this run computes itself: a branch only its steps after the fork."""
        return (self.steps - self.fork_step) * self.flops_per_step

    @property
    def synthetic(self) -> bool:
        return self.config.data.name == "synthetic"

    @property
    def dataset(self) -> str:
        """The dataset in words, for stage lines: `shapes r32_small`, `folder mine`, ..."""
        d = self.config.data
        detail = {"shapes": d.get("builder_config") or f"r{d.get('resolution')}",
                  "folder": d.get("folder_name"), "tfds": d.get("tfds_name")}.get(d.name, "")
        return f"{d.name} {detail}".strip()

    def stage_key(self) -> str:
        """Runs with one key share every pipeline stage (data, autoencoder, encoded data, judge,
        alignment): everything `imgsynth.stages` reads from a generator config but the model."""
        c = self.config
        instruments = c.get("instruments")
        return json.dumps({"data": c.data.to_dict(), "autoencoder": c.autoencoder.to_dict(),
                           "instruments": instruments.to_dict() if instruments else None,
                           "cache_dir": c.cache_dir, "runlocal": c.get("runlocal")},
                          sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    path: str
    runs: tuple[Run, ...]
    tuned_lr: str | None = None   # the grid file's TUNED_LR_FILE: the learning rates it read

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        close = difflib.get_close_matches(name, [r.name for r in self.runs], n=3)
        raise GridError(f"grid {self.name!r} has no run {name!r}"
                        + (f"; did you mean {', '.join(close)}?" if close else ""))

    def select(self, pattern: str | None) -> tuple[Run, ...]:
        """Runs whose name matches the regular expression `pattern` (all when None)."""
        if not pattern:
            return self.runs
        chosen = tuple(r for r in self.runs if re.search(pattern, r.name))
        if not chosen:
            raise GridError(f"no run of grid {self.name!r} matches {pattern!r}")
        return chosen


def resolve(grid: str) -> str:
    """A grid name (`quickstart`) or a file path → the absolute path of the grid file.

    Names resolve to experiments/grids/<name>.py of the repository checkout this package lives in:
    the grids are part of the checkout, not of an installed wheel.
    """
    if grid.endswith(".py") or os.sep in grid:
        path = os.path.abspath(grid)
        if not os.path.isfile(path):
            raise GridError(f"grid file {grid!r} does not exist")
        return path
    path = os.path.join(GRIDS_DIR, f"{grid}.py")
    if not os.path.isfile(path):
        known = sorted(f[:-3] for f in os.listdir(GRIDS_DIR) if f.endswith(".py")
                       and not f.startswith("_")) if os.path.isdir(GRIDS_DIR) else []
        raise GridError(
            f"unknown grid {grid!r}: no {path}. Known grids: {known or 'none found'}. Grids live "
            "in the repository checkout (experiments/grids/); install with `pip install -e .` from "
            "the checkout, or pass --grid=PATH/TO/GRID.py")
    return path


def _module(grid: str):
    """(name, path, module) of a grid file; its `sweep` checked."""
    path = resolve(grid)
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"imgsynth_grid_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise GridError(f"{path}: cannot load the grid file: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "sweep", None)):
        raise GridError(f"{path}: a grid file must define `def sweep(add): ...`")
    return name, path, module


def load(grid: str) -> Grid:
    """Loads and expands a grid file (name or path); every error names the file and the run."""
    name, path, module = _module(grid)
    return dataclasses.replace(expand(module.sweep, name=name, path=path),
                               tuned_lr=getattr(module, "TUNED_LR_FILE", None))


@dataclasses.dataclass(frozen=True)
class RunRef:
    """A run known by its name only: steps come from its own files once it has started."""
    name: str
    steps: int | None = None


def load_names(grid: str) -> Grid:
    """The grid's run names without building a config: what `--status` needs, in a process that
    never imports JAX (a login node answers in a second)."""
    name, path, module = _module(grid)
    refs = []
    for s in _specs(module.sweep, path):
        for seed in s["seeds"]:
            args = (s["paradigm"], s["size"])
            if s["schedule"] == BRANCHES:
                refs.append(RunRef(run_name(*args, "trunk", s["ablation"], seed)))
                refs += [RunRef(run_name(*args, float(b), s["ablation"], seed))
                         for b in sorted(s["budgets"])]
            else:
                refs.append(RunRef(run_name(*args, float(s["budget"]), s["ablation"], seed)))
    return Grid(name=name, path=path, runs=tuple(refs))


def _specs(sweep, path: str) -> list[dict]:
    """What `sweep(add)` asked for, each `add(...)` checked."""
    specs: list[dict] = []

    def add(paradigm: str, size: str, budget: float | None = None, *,
            budgets: Sequence[float] | None = None, schedule: str | None = None,
            trunk_budget: float | None = None, overrides: dict | None = None,
            ablation: dict | None = None, runlocal: bool = False, evaluate: bool = True,
            seeds: Sequence[int] = (0,)) -> None:
        specs.append(dict(paradigm=paradigm, size=size, budget=budget, budgets=budgets,
                          schedule=schedule, trunk_budget=trunk_budget,
                          overrides=dict(overrides or {}), ablation=dict(ablation or {}),
                          runlocal=runlocal, evaluate=evaluate, seeds=seeds))

    try:
        sweep(add)
    except Exception as e:
        hint = (" add() takes paradigm=, size=, budget= (or budgets=[...], schedule="
                f"'{BRANCHES}'[, trunk_budget=]), and optionally overrides={{'dotted.key': "
                "value}, ablation={'label': value}, runlocal=True, evaluate=False, seeds=(0, 1)."
                if isinstance(e, TypeError)
                else "")
        raise GridError(f"{path}: sweep(add) failed: {type(e).__name__}: {e}.{hint}") from e
    if not specs:
        raise GridError(f"{path}: sweep(add) added no runs")
    for i, s in enumerate(specs):
        _check_spec(s, f"{path}: run #{i + 1} ({s.get('paradigm')}, {s.get('size')}, "
                       f"{s.get('budget') or s.get('budgets')})")
    return specs


def expand(sweep, *, name: str, path: str = "<sweep>") -> Grid:
    """Calls `sweep(add)` and turns every `add(...)` into a Run."""
    specs = _specs(sweep, path)
    extra = command_line_overrides()
    for s in specs:
        s["overrides"].update(extra)
    budgets = sorted({float(b) for s in specs for b in (s["budgets"] or [s["budget"]])})
    runs, seen = [], {}
    for i, s in enumerate(specs):
        where = f"{path}: run #{i + 1}"
        made = [run for seed in s["seeds"] for run in (
            _make_branches({**s, "seed": seed}, name, where) if s["schedule"] == BRANCHES
            else [_make_run({**s, "seed": seed}, name, budgets, where)])]
        for run in made:
            if run.name in seen:
                raise GridError(
                    f"{where} and run #{seen[run.name] + 1} are both named {run.name!r}; runs of "
                    "a grid need distinct (paradigm, size, budget to one significant digit, "
                    "ablation, seed)")
            seen[run.name] = i
            runs.append(run)
    return Grid(name=name, path=path, runs=tuple(runs))


def _check_spec(s: dict, where: str) -> None:
    if not isinstance(s["paradigm"], str) or not isinstance(s["size"], str):
        raise GridError(f"{where}: paradigm and size must be strings")
    if s["schedule"] not in (None, BRANCHES):
        raise GridError(f"{where}: schedule={s['schedule']!r}; add() knows only "
                        f"schedule={BRANCHES!r} (set others with overrides={{'optimizer."
                        "schedule': ...})")
    if s["schedule"] == BRANCHES:
        if s["budget"] is not None or not s["budgets"] or isinstance(s["budgets"], (str, dict)):
            raise GridError(f"{where}: schedule={BRANCHES!r} takes budgets=[...] (a list of "
                            "training FLOPs), not budget=")
        if len(set(s["budgets"])) != len(s["budgets"]):
            raise GridError(f"{where}: budgets {s['budgets']} repeat a value")
        for b in (*s["budgets"], *([s["trunk_budget"]] if s["trunk_budget"] is not None else [])):
            _check_budget(b, where)
        if s["trunk_budget"] is not None and max(s["budgets"]) > s["trunk_budget"]:
            raise GridError(f"{where}: branch budget {max(s['budgets']):g} is beyond the trunk's "
                            f"budget {s['trunk_budget']:g}")
    elif s["budgets"] is not None or s["trunk_budget"] is not None:
        raise GridError(f"{where}: budgets=/trunk_budget= need schedule={BRANCHES!r}; a single "
                        "run takes budget=")
    else:
        _check_budget(s["budget"], where)
    for key in s["overrides"]:
        if not isinstance(key, str) or not key:
            raise GridError(f"{where}: override keys must be dotted config keys, got {key!r}")
        if key.split(".")[0] in RESERVED_KEYS:
            raise GridError(f"{where}: {key!r} is set by the grid itself (paradigm=, size=, "
                            "budget=, runlocal=, ablation=, seeds=); it cannot be an override")
    for key, value in s["ablation"].items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise GridError(f"{where}: ablation must map names to str/number/bool labels, got "
                            f"{key!r}: {value!r}")
    if not isinstance(s["runlocal"], bool) or not isinstance(s["evaluate"], bool):
        raise GridError(f"{where}: runlocal and evaluate must be True or False")
    seeds = s["seeds"]
    if (isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds
            or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds)
            or len(set(seeds)) != len(seeds)):
        raise GridError(f"{where}: seeds={seeds!r}; give distinct non-negative integers, e.g. "
                        "seeds=(0, 1, 2)")


def _check_budget(b, where: str) -> None:
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
        raise GridError(f"{where}: budget must be a positive number of training FLOPs, got {b!r}")


def run_name(paradigm: str, size: str, budget: float | str, ablation: dict,
             seed: int = 0) -> str:
    name = f"{paradigm}-{size}-{budget if isinstance(budget, str) else format(budget, '.0e')}"
    for key, value in sorted(ablation.items()):
        label = json.dumps(value) if isinstance(value, bool) else str(value)
        name += "-" + re.sub(r"[^A-Za-z0-9._=+]", "_", f"{key}={label}")
    return name + (f"-s{seed}" if seed else "")


def _make_run(s: dict, grid_name: str, budgets: Sequence[float], where: str) -> Run:
    budget, seed = float(s["budget"]), s.get("seed", 0)
    name = run_name(s["paradigm"], s["size"], budget, s["ablation"], seed)
    where = f"{where} ({name})"
    arg = (f"size={s['size']},budget={budget!r},seed={seed}"
           + (",runlocal" if s["runlocal"] else ""))
    from imgsynth import config as config_lib, registry   # paradigm modules: jax
    try:
        config = config_lib.default_config(s["paradigm"], arg)
    except (KeyError, ValueError) as e:
        raise GridError(f"{where}: {e.args[0] if e.args else e}") from None
    for key, value in s["overrides"].items():
        _override(config, key, value, where)
    config.grid = ml_collections.ConfigDict(
        {"name": grid_name, "budget": budget, "ablation": dict(s["ablation"])})
    config.keep_flops = tuple(b for b in budgets if b < budget)
    try:
        steps = registry.steps_for_budget(config, budget)
        cost = registry.paradigm_module(config).model_cost(config)
    except (KeyError, ValueError) as e:
        raise GridError(f"{where}: {e.args[0] if e.args else e}") from None
    return Run(name=name, paradigm=s["paradigm"], size=s["size"], budget=budget,
               ablation=dict(s["ablation"]), overrides=dict(s["overrides"]), config=config,
               steps=steps, flops_per_step=cost.train_flops_per_example * config.global_batch_size,
               params=cost.params_total, evaluate=s["evaluate"], seed=seed)


def _make_branches(s: dict, grid_name: str, where: str) -> list[Run]:
    """One trunk (constant rate to the last fork step, or `trunk_budget`) and one wsd branch per
    budget, all with the warm-up of the smallest budget so their rates agree up to every fork."""
    from imgsynth import registry, schedules   # paradigm modules: jax
    budgets = sorted(float(b) for b in s["budgets"])
    branches = [_make_run({**s, "budget": b}, grid_name, (), where) for b in budgets]
    opt = branches[0].config.optimizer
    warmup = schedules.warmup_steps(opt, branches[0].steps)
    trunk_name = run_name(s["paradigm"], s["size"], "trunk", s["ablation"], s.get("seed", 0))
    forks = []
    for run in branches:
        run.config.optimizer.update(schedule="wsd", warmup_steps=warmup, warmup_fraction=0.0)
        try:
            forks.append(registry.fork_step(run.config.optimizer, run.steps, run.budget))
        except ValueError as e:
            raise GridError(f"{where} ({run.name}): {e}") from None
    trunk_budget = s["trunk_budget"] or forks[-1] * branches[-1].flops_per_step
    trunk_steps = max(forks[-1], math.floor(trunk_budget / branches[-1].flops_per_step))
    config = ml_collections.ConfigDict(branches[-1].config.to_dict())
    config.optimizer.schedule = "constant"
    config.total_flops, config.total_steps = None, trunk_steps
    config.fork_budgets = tuple(budgets)
    config.grid.budget = trunk_steps * branches[-1].flops_per_step
    try:
        registry.plan(config)
    except ValueError as e:
        raise GridError(f"{where} ({trunk_name}): {e}") from None
    out = [dataclasses.replace(branches[-1], name=trunk_name, budget=config.grid.budget,
                               config=config, steps=trunk_steps, role="trunk", evaluate=False)]
    for run, fork in zip(branches, forks):
        run.config.fork_from.update(workdir=os.path.join("..", trunk_name), step=fork)
        out.append(dataclasses.replace(run, role="branch", trunk=trunk_name, fork_step=fork))
    return out


def _override(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    """Sets a dotted key that must already exist: a typo is an error, not a silent new field."""
    node, path = config, key.split(".")
    for i, part in enumerate(path):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, known, n=3)
            raise GridError(
                f"{where}: override {key!r}: no config key {'.'.join(path[:i + 1])!r}"
                + (f"; did you mean {', '.join('.'.join(path[:i] + [c]) for c in close)}?"
                   if close else ""))
        if i < len(path) - 1:
            node = node[part]
    try:
        node[path[-1]] = value
    except (TypeError, ValueError) as e:
        raise GridError(f"{where}: override {key}={value!r}: {e}") from None


# Estimates ----------------------------------------------------------------------------------------

def estimate_seconds(run: Run, flops_per_s: float | None = None) -> float | None:
    """Wall-clock seconds of one run (train + evaluate) on the whole machine; None if unknown.

    Without `flops_per_s`, only the CPU sizes have a measured rate.
    """
    rate = flops_per_s or CPU_FLOPS_PER_S.get(run.size)
    if rate is None:
        return None
    if flops_per_s is None and not run.config.model.scan_layers:
        rate *= CPU_UNROLLED_SPEEDUP
    evaluation = eval_seconds(run) if run.evaluate else 0.0
    overhead = CPU_TRAIN_OVERHEAD_S + evaluation if flops_per_s is None else 0.0
    return overhead + run.own_flops / rate


def eval_seconds(run: Run) -> float:
    """Seconds of the run's evaluation on a CPU, from its analytic inference FLOPs per image:
    sampling dominates (flow matching at size S: ~20x the start-up)."""
    from imgsynth import config as config_lib, registry   # paradigm modules: jax
    per_image = registry.paradigm_module(run.config).inference_flops(run.config)
    images = sum(config_lib.eval_samples(run.config.eval).values())
    return CPU_EVAL_OVERHEAD_S + images * per_image / CPU_SAMPLE_FLOPS_PER_S


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plan_table(runs: Sequence[Run], flops_per_s: float | None = None) -> str:
    """The --dry_run table: per run steps, FLOPs, parameters, kept budgets and an ETA."""
    header = (f"{'run':<34} {'steps':>8} {'batch':>6} {'train FLOPs':>11} {'params':>9} "
              f"{'keep':>4} {'ETA':>8}")
    lines = [header, "-" * len(header)]
    total, unknown = 0.0, 0
    for r in runs:
        eta = estimate_seconds(r, flops_per_s)
        total += eta or 0.0
        unknown += eta is None
        lines.append(f"{r.name:<34} {r.steps:>8} {r.config.global_batch_size:>6} "
                     f"{r.train_flops:>11.3g} {r.params / 1e6:>8.2f}M "
                     f"{len(r.config.keep_flops) + len(r.config.get('fork_budgets', ())):>4} "
                     f"{format_duration(eta):>8}" + (f"  {r.role}" if r.role else ""))
    lines.append("-" * len(header))
    flops, own = sum(r.train_flops for r in runs), sum(r.own_flops for r in runs)
    lines.append(f"{len(runs)} runs, {flops:.3g} training FLOPs"
                 + (f" seen, {own:.3g} computed (cooldown branches share their trunks)"
                    if own != flops else "")
                 + f", sequential ETA {format_duration(total if unknown < len(runs) else None)}"
                 + (f" (+{unknown} runs without a rate: pass --flops_per_s)" if unknown else ""))
    return "\n".join(lines)
