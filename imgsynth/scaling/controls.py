"""The report's sections on the study's controls: ablation runs against their main run, the
learning rates and the sweep that chose them, and seed replicates. They say how far the main
grid's differences can be trusted, so they sit apart from the findings."""
from __future__ import annotations

import math
import os

import numpy as np

from imgsynth import io
from imgsynth.scaling import fits as fitting, replicates
from imgsynth.scaling.markup import ci as _ci, esc as _esc, num as _num, table as _table


METRICS = (("prompt_following/overall", "prompt following"), ("fd_judge", "FD"),
           ("alignment_score", "alignment"), ("final/eval_loss", "eval loss"))


def ablation_html(rows) -> str:
    """Each ablation run next to the main run of its (paradigm, size, budget)."""
    done = replicates.aggregate([r for r in rows if r["status"] == "done"])
    base = {(r["paradigm"], r["size"], r["budget"]): r
            for r in replicates.aggregate(fitting.main_runs(rows))}
    abl = [r for r in done if r["ablation"]]
    if not abl:
        return "<p class='note'>No ablation runs (no run has <code>grid.ablation</code>).</p>"
    out = []
    for r in abl:
        b = base.get((r["paradigm"], r["size"], r["budget"]))
        cells = []
        for m, _ in METRICS:
            if m == "final/eval_loss":   # the last in-training eval loss (a schedule's figure)
                w = "ema" if np.isfinite(r[m + "_ema"]) else "raw"
                column = m + ("_ema" if w == "ema" else "")
            else:
                w = next((w for w in ("ema", "raw") if np.isfinite(r[f"{w}/{m}"])), "raw")
                column = f"{w}/{m}"
            v, v0 = r[column], (b[column] if b else math.nan)
            cells.append(f"{_num(v)} vs {_num(v0)} ({w})")
        out.append([_esc(r["run"]), _esc(r["ablation"]), _esc(r["paradigm"]), _esc(r["size"]),
                    _num(r["budget"], 2), *cells])
    return _table(["run", "ablation", "paradigm", "size", "budget",
                   *[f"{label}: ablation vs main run" for _, label in METRICS]], out, left=4)


def learning_rates_html(rows, workdir: str) -> str:
    """The peak rate each (paradigm, size) trained at and, where the grid read tuned rates
    (WORKDIR/tuned_lr.json, kept by the launcher), the sweep's final eval loss at every rate."""
    used: dict[tuple[str, str], set] = {}
    for r in fitting.main_runs(rows):
        used.setdefault((r["paradigm"], r["size"]), set()).add(r["lr"])
    if not used:
        return "<p class='note'>No finished main-grid run.</p>"
    tuned = io.read_json(os.path.join(workdir, io.TUNED_LR_FILE)) or {}
    losses, source = tuned.get("loss", {}), tuned.get("source", {})
    out = []
    for (paradigm, size), rates in sorted(used.items()):
        sweep = losses.get(paradigm, {}).get(size, {})
        best = min(sweep, key=sweep.get) if sweep else None
        cells = ", ".join((f"<b>{_num(float(lr))}: {_num(v, 4)}</b>" if lr == best else
                           f"{_num(float(lr))}: {_num(v, 4)}") for lr, v in sweep.items())
        edge = tuned.get("edge", {}).get(paradigm, {}).get(size)
        if edge:
            cells += f" (the {edge} rate swept: the optimum may lie beyond)"
        out.append([_esc(paradigm), _esc(size), ", ".join(_num(x) for x in sorted(rates)),
                    cells or "–"])
    note = ("<p class='note'>The peak learning rate of the main runs; the sweep's column: the "
            f"final {_esc(source.get('metric', 'eval loss'))} at each rate (bold: the lowest, "
            f"the rate chosen) at {_esc(', '.join(_num(b, 2) for b in source.get('budget', [])))}"
            f" FLOPs, from <code>{_esc(source.get('grid', ''))}</code> "
            f"({_esc(source.get('written', ''))}).</p>" if tuned else
            "<p class='note'>The peak learning rate of the main runs (the grid read no tuned "
            "rates).</p>")
    return note + _table(["paradigm", "size", "peak rate", "sweep: rate: final eval loss"],
                         out, left=2)


def replicates_html(rows, primary: str) -> str:
    """Configurations trained with several seeds: mean, spread across seeds and the interval used
    for leads, so a reader sees whether seeds or evaluation noise dominate."""
    groups = [g for g in replicates.aggregate(fitting.main_runs(rows)) if g["n_seeds"] > 1]
    if not groups:
        return ("<p class='note'>No configuration was trained with several seeds "
                "(<code>add(..., seeds=(0, 1, 2))</code> in a grid).</p>")
    out = []
    for g in groups:
        cells = []
        for m, _ in METRICS:
            column = m if m.startswith("final/") else f"{primary}/{m}"
            text = f"{_num(g.get(column))} ± {_num(g.get(f'{column}_sd'), 2)}"
            if f"{column}_lo" in g:
                text += f" {_ci([g[f'{column}_lo'], g[f'{column}_hi']])}"
            cells.append(text)
        out.append([_esc(g["paradigm"]), _esc(g["size"]), _num(g["budget"], 2),
                    _esc(g["seeds"]), *cells])
    return ("<p class='note'>Mean ± standard deviation across seeds, and the 95% interval the "
            "findings use (the wider of the t-interval over seeds and the combined evaluation "
            f"intervals; {primary.upper()} weights).</p>"
            + _table(["paradigm", "size", "budget", "seeds",
                      *[label for _, label in METRICS]], out, left=2))
