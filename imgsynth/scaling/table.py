"""Collects every run of a study workdir into one tidy table.

`results.csv` has one row per run (configuration, size, seed, compute, every evaluation metric
for raw and EMA weights with its 95% interval as `<metric>_lo`/`<metric>_hi`, inference cost,
status, and `ema_sigma_rel`, the width of the post-hoc EMA the `ema/` columns score); `curves.csv` has one row per evaluation during training (the intermediate-budget
losses). Seed replicates stay one row each here (`replicates.py` averages them for the report).
Missing values become NaN with a warning that names the run and the key, so a half-finished
study still tabulates; a workdir with nothing usable is refused. Only the standard library and
numpy are used: the table is a list of dicts.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from io import StringIO
from typing import Any

from imgsynth import io

NAN = float("nan")
PROMPT_CATEGORIES = ("overall", "single_object", "two_objects", "counting", "colors", "position",
                     "color_attribution")
EVAL_METRICS = tuple(f"prompt_following/{c}" for c in PROMPT_CATEGORIES) + (
    "fd_judge", "kid/mean", "kid/std", "alignment_score", "eval_loss",
    # Any captioned dataset (imgsynth.evaluate; eval.json `unavailable` says which a run lacks):
    "fd_align", "label_following", "inception_fid", "clip_score")
# Added with `unavailable` or later: an eval.json from before it lacks them without being
# incomplete.
NEWER_METRICS = ("fd_align", "label_following", "inception_fid", "clip_score",
                 "fd_align_real_floor", "kid_real_floor", "label_classifier_accuracy",
                 "judge_false_positive", "alignment_false_positive", "alignment_retrieval_chance",
                 "autoencoder_fd_align")
# Metrics eval.json gives a 95% interval (imgsynth.metrics.intervals); not the eval loss (from
# training, on fixed examples) nor KID's spread over subsets.
INTERVAL_METRICS = tuple(m for m in EVAL_METRICS if m not in ("kid/std", "eval_loss"))
INTERVAL_SUFFIXES = ("_lo", "_hi")
WEIGHTS = ("raw", "ema")
# The EMA's metrics on the prompts the raw weights saw (`eval.raw_samples`): what finding 4
# compares the raw weights with. The `ema` columns themselves where the raw weights saw them all.
MATCHED = "ema_matched"
CEILINGS = ("judge_prompt_following", "autoencoder_prompt_following",
            "alignment_retrieval_accuracy", "autoencoder_fd_judge",
            "fd_align_real_floor", "kid_real_floor", "label_classifier_accuracy",
            "judge_false_positive", "alignment_false_positive", "alignment_retrieval_chance",
            "autoencoder_label_following", "autoencoder_fd_align")
INFERENCE = ("flops_per_image", "images_per_s", "latency_s", "batch_size")
SETTINGS = ("num_samples", "guidance", "sampler_steps", "seed", "checkpoint_step")
RUN_COLUMNS = ("run", "paradigm", "size", "seed", "grid", "ablation", "status", "reason", "budget",
               "global_batch_size", "lr", "schedule", "total_steps", "steps", "examples_seen", "train_flops",
               "params_all", "params_embedding", "params_non_embedding", "flops_per_example",
               "final/eval_loss", "final/eval_loss_ema")
RESULT_COLUMNS = (RUN_COLUMNS + tuple(f"{w}/{m}{x}" for w in (*WEIGHTS, MATCHED)
                                      for m in EVAL_METRICS
                                      for x in ("", *(INTERVAL_SUFFIXES if m in INTERVAL_METRICS
                                                      else ())))
                  + tuple(f"ceilings/{c}" for c in CEILINGS)
                  + tuple(f"inference/{k}" for k in INFERENCE)
                  + tuple(f"settings/{k}" for k in SETTINGS)
                  + ("ema_sigma_rel", "samples_png", "dataset", "unavailable", "above_ceiling"))
CURVE_COLUMNS = ("run", "paradigm", "size", "budget", "ablation", "params_non_embedding", "step",
                 "examples_seen", "train_flops", "eval/loss", "eval/loss_ema")
STRING_COLUMNS = frozenset(
    {"run", "paradigm", "size", "grid", "ablation", "status", "reason", "samples_png",
     "settings/sampler/method",   # flow's ODE solver (euler | heun); the token samplers have none
     "settings/sampler/head_method",   # the per-token head's solver (ar_continuous, mar)
     "settings/eval_split",       # the split the prompts and reference images come from
     "dataset", "unavailable",
     "above_ceiling"})   # scores above their autoencoder's reconstruction ceiling (flagged)
STATUSES = ("pending", "running", "done", "failed")

log = logging.getLogger(__name__)


class NoResultsError(ValueError):
    """The workdir holds no run, or no run with anything to tabulate."""


@dataclasses.dataclass
class Results:
    """All runs of a workdir: `rows` (one dict per run), `curves` (one per training-time
    evaluation), the column order of each, and the warnings raised while reading."""
    rows: list[dict[str, Any]]
    curves: list[dict[str, Any]]
    columns: list[str]
    warnings: list[str]


def find_run_dirs(workdir: str) -> list[str]:
    """Every directory below `workdir` holding a config.json (runs/<name>/ or deeper); the
    search does not descend into a run directory (checkpoints live there)."""
    found = []
    for root, dirs, files in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if "config.json" in files and os.path.abspath(root) != os.path.abspath(workdir):
            found.append(root)
            dirs[:] = []
    return sorted(found)


def _number(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return NAN
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _read_json(path: str, what: str, warn) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        warn(f"{what}: unreadable ({e}); ignored")
        return None
    if not isinstance(data, dict):
        warn(f"{what}: expected a JSON object, got {type(data).__name__}; ignored")
        return None
    return data


def _read_metrics(path: str, name: str, warn) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
    if bad:
        warn(f"{name}: {bad} unreadable line(s) in metrics.jsonl skipped (a run still writing?)")
    return rows


def _first(rows: Iterable[dict], key: str) -> float:
    for row in rows:
        if key in row:
            return _number(row[key])
    return NAN


def _max(rows: Iterable[dict], key: str) -> float:
    values = [_number(r[key]) for r in rows if key in r]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else NAN


def ablation_label(grid: Mapping[str, Any] | None) -> str:
    """'ema=false;autoencoder=small' from grid.ablation; '' for a main-grid run."""
    ablation = (grid or {}).get("ablation") or {}
    return ";".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                    for k, v in sorted(ablation.items()))


def _run_row(run_dir: str, workdir: str, warn) -> tuple[dict, list[dict], bool]:
    name = os.path.relpath(run_dir, workdir)
    config = _read_json(os.path.join(run_dir, "config.json"), f"{name}/config.json", warn) or {}
    status = _read_json(os.path.join(run_dir, "status.json"), f"{name}/status.json", warn)
    if status is None:
        warn(f"{name}: no status.json; status 'unknown'")
        status = {"status": "unknown"}
    metrics = _read_metrics(os.path.join(run_dir, "metrics.jsonl"), name, warn)
    evaluation = _read_json(os.path.join(run_dir, "eval.json"), f"{name}/eval.json", warn)
    grid = config.get("grid") if isinstance(config.get("grid"), dict) else {}
    optimizer = config.get("optimizer") if isinstance(config.get("optimizer"), dict) else {}
    row: dict[str, Any] = {
        "run": name, "paradigm": str(config.get("paradigm", "")),
        "size": str(config.get("size", "")),
        "seed": _number(config.get("seed")), "grid": str(grid.get("name", "")),
        "ablation": ablation_label(grid), "status": str(status.get("status", "unknown")),
        "reason": str(status.get("reason") or ""), "budget": _number(grid.get("budget")),
        "global_batch_size": _number(config.get("global_batch_size")),
        "lr": _number(optimizer.get("lr")), "schedule": str(optimizer.get("schedule", "")),
        "total_steps": _number(config.get("total_steps")),
    }
    for key in ("paradigm", "size"):
        if not row[key]:
            warn(f"{name}: config.json has no '{key}'")
    if row["status"] not in STATUSES:
        warn(f"{name}: unknown status {row['status']!r}")
    steps = _max(metrics, "step")
    row["steps"] = steps if not math.isnan(steps) else _number(status.get("step"))
    row["params_all"] = _first(metrics, "n_params/all")
    row["params_embedding"] = _first(metrics, "n_params/embedding")
    row["params_non_embedding"] = _first(metrics, "n_params/non_embedding")
    row["flops_per_example"] = _first(metrics, "flops/train_per_example")
    row["examples_seen"] = _max(metrics, "examples_seen")
    if math.isnan(row["examples_seen"]) and metrics:
        row["examples_seen"] = row["steps"] * row["global_batch_size"]
        warn(f"{name}: no examples_seen in metrics.jsonl; using steps × global_batch_size")
    row["train_flops"] = _max(metrics, "flops/train_cumulative")
    if math.isnan(row["train_flops"]) and metrics:
        row["train_flops"] = row["steps"] * _first(metrics, "flops/train_per_step")
        warn(f"{name}: no flops/train_cumulative in metrics.jsonl; using steps × "
             "flops/train_per_step")
    # Cooldown branches (docs/launch.md): the FLOPs computed in this directory — a branch's model
    # saw its trunk's steps up to the fork too — so the column's sum is the grid's real cost.
    fork_step = _number((config.get("fork_from") or {}).get("step")) if isinstance(
        config.get("fork_from"), dict) else 0.0
    row["run_flops"] = (row["train_flops"] - fork_step * _first(metrics, "flops/train_per_step")
                        if fork_step > 0 else row["train_flops"])
    evals = sorted((r for r in metrics if "eval/loss" in r or "eval/loss_ema" in r),
                   key=lambda r: _number(r.get("step")))
    row["final/eval_loss"] = _number(evals[-1].get("eval/loss")) if evals else NAN
    row["final/eval_loss_ema"] = _number(evals[-1].get("eval/loss_ema")) if evals else NAN
    if metrics and math.isnan(row["params_non_embedding"]):
        warn(f"{name}: metrics.jsonl has no n_params/non_embedding")

    if evaluation is not None:
        _add_evaluation(row, evaluation, name, run_dir, workdir, warn)
    elif row["status"] == "done" and not config.get("fork_budgets"):   # trunks never are
        warn(f"{name}: done but no eval.json (not evaluated yet); its metrics are NaN")
    # Eval rows carry the step and FLOPs; examples seen come from the training row of that step.
    examples = {_number(r.get("step")): _number(r["examples_seen"]) for r in metrics
                if "examples_seen" in r}
    curves = [{
        "run": name, "paradigm": row["paradigm"], "size": row["size"], "budget": row["budget"],
        "ablation": row["ablation"], "params_non_embedding": row["params_non_embedding"],
        "step": _number(r.get("step")),
        "examples_seen": _number(r.get("examples_seen", examples.get(_number(r.get("step")), NAN))),
        "train_flops": _number(r.get("flops/train_cumulative")),
        "eval/loss": _number(r.get("eval/loss")), "eval/loss_ema": _number(r.get("eval/loss_ema")),
    } for r in evals]
    return row, curves, bool(metrics) or evaluation is not None


def _add_evaluation(row, evaluation, name, run_dir, workdir, warn) -> None:
    weights = evaluation.get("weights") if isinstance(evaluation.get("weights"), dict) else {}
    if "raw" in weights and "ema" in weights and MATCHED not in weights:
        weights = {**weights, MATCHED: weights["ema"]}   # raw sampled on every prompt
    values = {}
    for w, tree in weights.items():
        if isinstance(tree, dict):
            values.update(_flatten(tree, w))
    for section in ("ceilings", "inference", "settings"):
        if isinstance(evaluation.get(section), dict):
            values.update(_flatten(evaluation[section], section))
    # Metrics the run's dataset cannot support are recorded as such, not missing.
    unavailable = evaluation.get("unavailable")
    unavailable = (dict(unavailable) if isinstance(unavailable, dict)
                   else dict.fromkeys(NEWER_METRICS, ""))
    # A weight set the config chose not to evaluate (`eval.weights`) is noted once, not missed.
    unavailable.update({f"{w} weights": "not evaluated (the config's eval.weights leaves them "
                        "out)" for w in WEIGHTS if weights and w not in weights})
    row["dataset"] = str(evaluation.get("dataset") or "")
    row["ema_sigma_rel"] = _number(evaluation.get("ema_sigma_rel"))   # the post-hoc EMA's width
    row["unavailable"] = "; ".join(f"{k}: {v}" for k, v in sorted(unavailable.items()))
    above = evaluation.get("above_ceiling") if isinstance(evaluation.get("above_ceiling"),
                                                          dict) else {}
    row["above_ceiling"] = "; ".join(
        f"{k} {v.get('value', NAN):.3g} [{v.get('lo', NAN):.3g}, {v.get('hi', NAN):.3g}] > "
        f"ceiling {v.get('ceiling', NAN):.3g}" for k, v in sorted(above.items())
        if isinstance(v, dict))
    missing = [c for c in RESULT_COLUMNS if c not in values and "/" in c and c.split("/")[0] in (
        *WEIGHTS, MATCHED, "ceilings", "inference", "settings")
        and not _unavailable(c, unavailable)]
    if not any(k.endswith(INTERVAL_SUFFIXES) for k in values):
        warn(f"{name}: eval.json has no intervals (evaluated before they were recorded); its "
             "_lo/_hi columns are NaN")
        missing = [c for c in missing if not c.endswith(INTERVAL_SUFFIXES)]
    # A missing metric's interval columns go unnamed: they are missing with it.
    shown = [c for c in missing if not (c.endswith(INTERVAL_SUFFIXES) and c[:-3] in missing)]
    if missing:
        warn(f"{name}: eval.json lacks {len(missing)} key(s), NaN in the table: "
             + ", ".join(shown[:8]) + (" …" if len(shown) > 8 else ""))
    for key, value in values.items():
        if key in STRING_COLUMNS:
            row[key] = str(value)
            continue
        row[key] = _number(value)
        if math.isnan(row[key]) and value is not None:
            warn(f"{name}: eval.json {key}={value!r} is not a number; NaN")
    png = evaluation.get("samples_png")
    if png:
        path = os.path.join(run_dir, str(png))
        row["samples_png"] = os.path.relpath(path, workdir)
        if not os.path.exists(path):
            warn(f"{name}: samples_png {png!r} does not exist")


def _unavailable(column: str, unavailable: dict) -> bool:
    """Whether a result column belongs to a metric eval.json marks unavailable (its ceilings
    included: prompt following's come from the judge)."""
    weights = column.split("/")[0]
    needs = ("raw", "ema") if weights == MATCHED else (weights,)   # a match needs both
    if any(f"{w} weights" in unavailable for w in needs):
        return True
    metric = column.split("/")[1].removesuffix("_lo").removesuffix("_hi")
    judge = "prompt_following" in unavailable and any(
        k in metric for k in ("judge", "prompt_following"))
    labels = "label_following" in unavailable and "label" in metric
    return metric in unavailable or judge or labels


def collect(workdir: str) -> Results:
    """Reads every run under `workdir` into a `Results` table."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    run_dirs = find_run_dirs(workdir)
    if not run_dirs:
        raise NoResultsError(
            f"no run directories under {workdir!r}: expected runs/<name>/config.json")
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        log.warning(message)

    rows, curves, usable = [], [], 0
    for run_dir in run_dirs:
        row, run_curves, ok = _run_row(run_dir, workdir, warn)
        rows.append(row)
        curves.extend(run_curves)
        usable += ok
    if not usable:
        raise NoResultsError(
            f"{len(run_dirs)} run directories under {workdir!r}, but none has metrics.jsonl rows "
            "or an eval.json: nothing to tabulate yet")
    extra = sorted({k for r in rows for k in r} - set(RESULT_COLUMNS))
    columns = list(RESULT_COLUMNS) + extra
    for row in rows:
        for c in columns:
            row.setdefault(c, "" if c in STRING_COLUMNS else NAN)
    return Results(rows=rows, curves=curves, columns=columns, warnings=warnings)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def to_csv(rows: list[dict], columns: Iterable[str]) -> str:
    """CSV text with floats at full precision (repr) and NaN written as 'nan'."""
    columns = list(columns)
    buf = StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(c, NAN)) for c in columns])
    return buf.getvalue()


def read_csv(path: str) -> list[dict[str, Any]]:
    """Reads a table written by `write_tables` back, numbers as floats."""
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: (v if k in STRING_COLUMNS else _number(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_tables(results: Results, out_dir: str) -> tuple[str, str]:
    """Writes results.csv and curves.csv into `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = os.path.join(out_dir, "results.csv"), os.path.join(out_dir, "curves.csv")
    io.atomic_write(paths[0], to_csv(results.rows, results.columns))
    io.atomic_write(paths[1], to_csv(results.curves, CURVE_COLUMNS))
    return paths
