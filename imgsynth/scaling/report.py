"""The study report: one self-contained report.html (figures inlined as base64 PNG, no external
JS, CSS or fonts) plus results.csv, curves.csv, fits.json and the PNGs, in WORKDIR/report/.

    python -m imgsynth.scaling.report --workdir=DIR [--budgets=1e18,1e19] [--bootstrap=1000]
        [--seed=0] [--delta=1e-3]
"""
from __future__ import annotations

import argparse
import base64
import datetime
import logging
import math
import os
import sys
from collections.abc import Sequence

import numpy as np

from imgsynth.scaling import claims, controls, figures, fits as fitting, square, table
from imgsynth.scaling.markup import (ci as _ci, esc as _esc, num as _num, num0 as _num0,
                                      table as _table, warn as _warn)
from imgsynth.scaling.estimators import LOSS_HUBER_DELTA, FitError
from imgsynth import io

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1180px;
margin:24px auto;padding:0 16px;color:#1a1a1a;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #d0d0d0;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}
figure{margin:1em 0 1.6em}figure img{max-width:100%;border:1px solid #e4e4e4}
figcaption{font-size:.88em;color:#444;margin-top:.3em}
.note{color:#555;font-size:.9em}.win{font-weight:600}.warn{color:#9a3412}
.samples img{image-rendering:pixelated;width:160px;height:auto;border:1px solid #ddd}
code{background:#f4f4f4;padding:0 3px}
"""
PARADIGM_NAMES = {"flow": "flow matching (diffusion)", "maskgit": "MaskGIT (masked tokens)",
                  "ar": "autoregressive (next token)",
                  "ar_continuous": "autoregressive on continuous tokens (next token, flow head)",
                  "mar": "MAR (random order, continuous tokens, flow head)"}

log = logging.getLogger(__name__)


class _Figures:
    """Saves each figure as a PNG in the report folder and returns its inline HTML."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.written: list[str] = []

    def __call__(self, fig, name: str, caption: str) -> str:
        if fig is None:
            return f'<p class="note">No data for this figure ({_esc(name)}).</p>'
        path = os.path.join(self.out_dir, f"{name}.png")
        data = figures.save_png(fig, path)
        self.written.append(path)
        b64 = base64.b64encode(data).decode("ascii")
        return (f'<figure><img alt="{_esc(name)}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{caption}</figcaption></figure>")


NO_CLEAR_LEAD = "no clear lead"


def _finding_rows(f: dict, win, esc=str) -> list[list[str]]:
    """Rows of the findings table; `win` marks the leader's cells, `esc` escapes text. A
    paradigm is named ahead only when its lead is clear (intervals separate): a point estimate
    that leads inside overlapping intervals — or a tie at 0 — stays in its own column."""
    rows = []
    for x in f["findings"]:
        leader = x["winner"] if x["clear"] else None
        cells = []
        for p in f["meta"]["paradigms"]:
            text = _num(x["values"].get(p))
            if (x.get("ci95") or {}).get(p):
                text += f" {_ci(x['ci95'][p])}"
            if (x.get("seeds") or {}).get(p, 1) > 1:
                text += f" ({x['seeds'][p]} seeds)"
            cells.append(win(text) if p == leader else text)
        clear = {None: "– (no intervals)", True: "yes",
                 False: "no (intervals overlap)"}[x["clear"]]
        rows.append([esc(x["label"]), _num(x["budget"], 2), x["kind"],
                     win(esc(leader)) if leader else NO_CLEAR_LEAD, *cells, clear])
    return rows


def _crossover_rows(f: dict, esc=str) -> list[list[str]]:
    rows = []
    for c in f["crossovers"]:
        if c["metric"].split("/")[0] != f["meta"]["primary_weights"]:
            continue
        if c["status"] == "crossover":
            where = "within the data" if c["within_data"] else "extrapolated"
            verdict = (f"{esc(c['challenger'])} overtakes {esc(c['leader'])} at "
                       f"{_num(c['flops'], 2)} {_ci(c['ci95'], 2)} ({where})")
        else:
            verdict = (f"no crossover in range: {esc(c['leader'])} stays ahead of "
                       f"{esc(c['challenger'])}")
        frac = c.get("fraction_of_resamples_crossing")
        rows.append([esc(c["label"]), verdict, "–" if frac is None else f"{100 * frac:.0f} %"])
    return rows


FINDINGS_HEADERS = ("metric", "budget (FLOPs)", "", "ahead")
CROSSOVER_HEADERS = ("metric", "crossover budget (FLOPs) [95% CI]", "resamples crossing")


def _findings_html(f: dict) -> str:
    win = lambda text: f"<span class='win'>{text}</span>"  # noqa: E731
    out = _table([*FINDINGS_HEADERS, *f["meta"]["paradigms"], "clear lead?"],
                 _finding_rows(f, win, _esc), left=1)
    lo, hi = f["meta"]["crossover_range"]
    names = sorted({c["estimator"] for c in f["crossovers"]}
                   | {e["estimator"] for es in f["compute_fits"].values() for e in es.values()
                      if e["metric"].split("/", 1)[-1] in fitting.HEADLINE
                      + sum(fitting.SUBSTITUTES.values(), ())})
    out += (f"<p class='note'>Extrapolated values and crossovers come from the fitted e(C): "
            f"{_esc('; '.join(names))}.</p>"
            f"<h3>Extrapolated crossovers</h3><p class='note'>Searched over {_num(lo, 2)} – "
            f"{_num(hi, 2)} FLOPs (smallest run to largest requested budget). The interval is the "
            "95% bootstrap interval among resamples that cross; the last column says how many "
            "resamples cross in range at all.</p>")
    return out + _table(CROSSOVER_HEADERS, _crossover_rows(f, _esc))


def findings_markdown(f: dict) -> str:
    """The paper's findings with their verdicts, the findings and the crossover tables as
    Markdown, for a README or a paper draft."""
    def table_md(headers, rows):
        return [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers),
                *(f"| {' | '.join(r)} |" for r in rows)]
    bold = lambda text: f"**{text}**"  # noqa: E731
    lines = table_md(claims.HEADERS, claims.rows(f["claims"], bold)) + [""] + table_md(
        [*FINDINGS_HEADERS, *f["meta"]["paradigms"], "clear lead?"], _finding_rows(f, bold))
    return "\n".join(lines + [""] + table_md(CROSSOVER_HEADERS, _crossover_rows(f))) + "\n"


def _summary_html(f: dict) -> str:
    """One sentence per headline metric: the leader at the largest trained budget, the fitted
    leader at each extrapolation budget, and the crossovers that make the difference."""
    items = []
    for column in dict.fromkeys(x["metric"] for x in f["findings"]):
        rows = [x for x in f["findings"] if x["metric"] == column]
        observed = [x for x in rows if x["kind"] == "observed"]
        text = f"<b>{_esc(rows[0]['label'])}</b>: "
        if observed:
            last = observed[-1]
            text += (f"at the largest trained budget ({_num(last['budget'], 2)} FLOPs) "
                     + {True: f"<b>{_esc(last['winner'])}</b> leads clearly",
                        False: f"{NO_CLEAR_LEAD} (intervals overlap)",
                        None: f"{NO_CLEAR_LEAD} (no intervals)"}[last["clear"]])
        extra = [(_esc(x["winner"]) if x["clear"] else NO_CLEAR_LEAD)
                 + f" at {_num(x['budget'], 2)}"
                 for x in rows if x["kind"] == "extrapolated"]
        if extra:
            text += "; fitted curves, ahead: " + ", ".join(extra)
        crossings = [f"{_esc(c['challenger'])} overtakes {_esc(c['leader'])} at "
                     f"{_num(c['flops'], 2)} {_ci(c['ci95'], 2)}"
                     for c in f["crossovers"] if c["metric"] == column
                     and c["status"] == "crossover" and not c["within_data"]]
        if crossings:
            text += "; extrapolated crossovers: " + "; ".join(crossings)
        items.append(f"<li>{text}.</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _compute_fit_rows(f: dict) -> list[list[str]]:
    rows = []
    for p, entries in f["compute_fits"].items():
        for column, e in entries.items():
            if "params" not in e:
                rows.append([_esc(e.get("label", column)), _esc(p), str(e.get("n_points", 0)),
                             "–", "–", "–", "–", _warn(e.get("error"))])
                continue
            ho = e["heldout"]
            held = ("–" if "error" in ho else
                    f"{100 * ho['mean_abs_rel_error']:.1f} % at {_num(ho['budget'], 2)} "
                    f"(n={ho['n_test']})")
            pr, ci = e["params"], e["ci95"]
            notes = "; ".join(e["warnings"] + ([ho["error"]] if "error" in ho else []))
            boot = f"{e['bootstrap']['ok']}/{e['bootstrap']['requested']}"
            rows.append([_esc(e["label"]), _esc(p), str(e["n_points"]),
                         f"{_num0(pr['E'])} {_ci(ci['E'])}", _num(pr["A"]),
                         f"{_num(pr['alpha'])} {_ci(ci['alpha'])}", held,
                         f"<span class='note'>e = {_esc(e['transform'])}; "
                         f"{_esc(e['estimator'])}; bootstrap {boot}. {_esc(notes)}</span>"])
    return rows


def _loss_fit_html(f: dict) -> str:
    rows = []
    for p, e in f["loss_fits"].items():
        if "params" not in e:
            rows.append([_esc(p), "–", "–", "–", "–", "–", _warn(e.get("error"))])
            continue
        law, cc, ci = e["params"], e["cross_check"], e["ci95"]
        opt = e["compute_optimal"]
        opt_txt = (f"a = {_num(e['a'])} {_ci(ci['a'])}<br>b = {_num(e['b'])} {_ci(ci['b'])}"
                   if "a" in opt else _esc(opt.get("error")))
        ho = e["heldout"]
        held = "–" if "error" in ho else f"{100 * ho['mean_abs_rel_error']:.2f} %"
        vp = cc["params"]
        rows.append([
            _esc(p),
            f"E={_num(law['E'])} {_ci(ci['E'])}<br>A={_num(law['A'])}, α={_num(law['alpha'])} "
            f"{_ci(ci['alpha'])}<br>B={_num(law['B'])}, β={_num(law['beta'])} "
            f"{_ci(ci['beta'])}<br><span class='note'>{_esc(e['estimator'])}; bootstrap "
            f"{e['bootstrap']['ok']}/{e['bootstrap']['requested']}</span>",
            f"E={_num(vp['E'])}<br>α={_num(vp['alpha'])}, β={_num(vp['beta'])}<br>"
            f"{'agrees' if cc['agree'] else '<span class=warn>disagrees</span>'}: predictions "
            f"within {100 * cc['max_rel_diff_on_data']:.2f} %, |Δa| = {_num(cc['a_diff'], 2)}",
            opt_txt, f"{_num(e['k_flops_per_param_example'])}",
            f"{held}<br><span class='note'>{_esc('; '.join(e['warnings']))}</span>"])
    return _table(["paradigm", "L(N, D) [95% CI]", "cross-check: variable projection",
                   "N* ∝ C^a, D* ∝ C^b [95% CI]", "k = C/(N·D)", "held-out error"], rows)


def _inference_html(rows) -> str:
    runs = fitting.main_runs(rows)
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["paradigm"], r["size"]), []).append(r)
    out = []
    for (p, s), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], np.nanmedian(
            [r["params_non_embedding"] for r in kv[1]]))):
        def med(k):
            v = [r[k] for r in rs if np.isfinite(r[k])]
            return float(np.median(v)) if v else None
        out.append([_esc(p), _esc(s), _num(med("params_non_embedding")),
                    _num(med("inference/flops_per_image")), _num(med("inference/images_per_s")),
                    _num(med("inference/latency_s")), _num(med("settings/sampler_steps")),
                    _num(med("inference/batch_size"))])
    return _table(["paradigm", "size", "params (non-emb.)", "FLOPs / image", "images / s",
                   "latency / batch (s)", "sampler steps", "batch"], out, left=2)


def _samples_html(rows, workdir: str) -> str:
    runs = [r for r in fitting.main_runs(rows) if r["samples_png"]]
    if not runs:
        return "<p class='note'>No sample grids (no run's eval.json names a samples_png).</p>"
    paradigms = sorted({r["paradigm"] for r in runs})
    body = []
    for b, group in fitting.budget_groups(runs):
        cells = []
        for p in paradigms:
            cand = [r for r in group if r["paradigm"] == p]
            key = next((c for c in ("ema/fd_judge", "raw/fd_judge", "ema/fd_align", "raw/fd_align")
                        if any(np.isfinite(r[c]) for r in cand)), None)
            if not cand:
                cells.append("–")
                continue
            best = min(cand, key=lambda r: r[key] if key and np.isfinite(r[key]) else math.inf)
            path = os.path.join(workdir, best["samples_png"])
            if not os.path.exists(path):
                cells.append(f"<span class='warn'>missing {_esc(best['samples_png'])}</span>")
                continue
            with open(path, "rb") as fh:
                b64 = base64.b64encode(fh.read()).decode("ascii")
            fd = _num(best[key]) if key else "–"
            cells.append(f'<img alt="samples {_esc(best["run"])}" '
                         f'src="data:image/png;base64,{b64}"><br>'
                         f"<span class='note'>size {_esc(best['size'])}, FD {fd}</span>")
        body.append([_num(b, 2), *cells])
    return "<div class='samples'>" + _table(["budget (FLOPs)", *paradigms], body) + "</div>"


def _ceilings_html(rows) -> str:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "done" and any(np.isfinite(r[f"ceilings/{c}"]) for c in table.CEILINGS):
            ae = next((part for part in r["ablation"].split(";")
                       if part.startswith("autoencoder=")), "autoencoder=default")
            groups.setdefault(ae, []).append(r)
    if not groups:
        return "<p class='note'>No eval.json reports instrument ceilings.</p>"
    out = []
    for ae, rs in sorted(groups.items()):
        cells = []
        for c in table.CEILINGS:
            v = [r[f"ceilings/{c}"] for r in rs if np.isfinite(r[f"ceilings/{c}"])]
            cells.append(_num(float(np.median(v))) if v else "–")
        out.append([_esc(ae.split("=", 1)[1]), str(len(rs)), *cells])
    return _table(["autoencoder", "runs", "judge prompt following (real images)",
                   "prompt following of AE reconstructions", "alignment retrieval accuracy",
                   "FD of AE reconstructions", "fd_align real vs real", "KID real vs real",
                   "label classifier accuracy (real images)", "judge prompt following on "
                   "destroyed images (worst)", "alignment retrieval on destroyed images (worst)",
                   "alignment retrieval by chance", "label following of AE reconstructions",
                   "fd_align of AE reconstructions"], out)


def _ceilings_sentence(rows) -> str:
    """The instrument ceilings in one sentence at the top, so a reader knows what the numbers
    can mean before reading them (medians over evaluated runs; the full table is further down)."""
    done = [r for r in rows if r["status"] == "done"]

    def med(column, paradigms=None):
        v = [r[f"ceilings/{column}"] for r in done if np.isfinite(r[f"ceilings/{column}"])
             and (paradigms is None or r["paradigm"] in paradigms)]
        return float(np.median(v)) if v else None

    recon = [f"{label} at {_num(v, 2)}" for label, v in (
        ("the continuous autoencoder's (flow, continuous tokens)",
         med("autoencoder_prompt_following", (claims.DIFFUSION, *claims.CONTINUOUS))),
        ("the tokenizer's (MaskGIT, next-token)",
         med("autoencoder_prompt_following", ("maskgit", "ar")))) if v is not None]
    parts = [text.format(_num(v, 2)) for text, v in (
        ("the judge reads real test images at {} (the best prompt following any run can show)",
         med("judge_prompt_following")),
        ("autoencoder reconstructions: " + ", ".join(recon), 0 if recon else None),
        ("the alignment model retrieves an image's caption among 100 at {} (chance about 0.01)",
         med("alignment_retrieval_accuracy")),
        ("the judge credits destroyed images (no scene) with at most {}",
         med("judge_false_positive"))) if v is not None]
    return ("<p><b>Instrument ceilings</b>: " + "; ".join(parts) + ". No run can score above "
            "its latent space's ceiling.</p>") if parts else ""


def _dataset_html(rows) -> str:
    """The dataset(s) the runs were evaluated on, and the metrics each could not support."""
    done = [r for r in rows if r["status"] == "done" and r["dataset"]]
    if not done:
        return ""
    names = sorted({r["dataset"] for r in done})
    out = f"<p>Dataset: {_esc(', '.join(names))}.</p>"
    reasons = sorted({r["unavailable"] for r in done if r["unavailable"]})
    if reasons:
        parts = dict.fromkeys(part for text in reasons for part in text.split("; "))
        items = "".join(f"<li>{_esc(part)}</li>" for part in parts)
        out += (f"<p class='note'>Not evaluated or not available for these runs:</p>"
                f"<ul class='note'>{items}</ul>")
    above = [r for r in done if r.get("above_ceiling")]
    if above:
        items = "".join(f"<li>{_esc(r['run'])}: {_esc(r['above_ceiling'])}</li>" for r in above)
        out += ("<p class='warn'>Scores above their autoencoder's reconstruction ceiling (no "
                "generator in that latent space can draw better than its autoencoder "
                "reconstructs: the instrument credits something else; read these as "
                f"unreliable):</p><ul class='warn'>{items}</ul>")
    return out


def _runs_html(results: table.Results, f: dict) -> str:
    counts: dict[str, int] = {}
    for r in results.rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    out = "<p>" + ", ".join(f"{n} {_esc(s)}" for s, n in sorted(counts.items())) + " runs.</p>"
    other = [r for r in results.rows if r["status"] != "done"]
    if other:
        out += _table(["run", "status", "step", "reason"],
                      [[_esc(r["run"]), _esc(r["status"]), _num(r["steps"], 6), _esc(r["reason"])]
                       for r in other], left=2)
    warn = results.warnings + [f"{p} {c}: {w}" for p, es in f["compute_fits"].items()
                               for c, e in es.items() for w in e.get("warnings", [])]
    if warn:
        items = "".join(f"<li>{_esc(w)}</li>" for w in warn)
        out += (f"<details><summary>{len(warn)} data and fit warnings</summary>"
                f"<ul class='note'>{items}</ul></details>")
    return out


METHOD = """<p>Every fit is per paradigm. Metrics are fitted in error form e = M − y for
higher-is-better metrics (prompt following, M = 1; alignment score, M = 100) and e = y otherwise,
as <code>e(C) = E + A·C<sup>−α</sup></code> against training FLOPs C, minimising a Huber loss on
log residuals over all finished main-grid runs (every size of the shared ladder, so the curves
compare paradigms over identical grids). The loss surface <code>L(N, D) = E + A/N<sup>α</sup> +
B/D<sup>β</sup></code> (N non-embedding parameters, D training examples) is fitted as Hoffmann et
al. (2022) and Besiroglu et al. (2024) do: a Huber loss (δ = 10<sup>−3</sup> unless the tables name
another) on log residuals, minimised by L-BFGS-B from a grid of starts; variable projection (least
squares on relative residuals) is only its cross-check. Its compute-optimal allocation uses C =
k·N·D with k the median C/(N·D) of the runs. Intervals are 95% percentile intervals of a bootstrap
over runs, each resample refitted with the estimator of the point estimate; resamples the estimator
refuses are dropped and counted. Every table names the estimator behind its numbers. The held-out
check refits without the largest budget and predicts it. Losses are compared within a paradigm
only. Each run's metric carries a 95% interval over its evaluated images (a bootstrap of per-image
scores; half-samples of the generated images for FD and KID); seed replicates are averaged, with
the wider of the t-interval over seeds and the combined evaluation intervals. A lead is called
clear only when the leader's interval and the runner-up's do not overlap. Details:
<code>docs/scaling.md</code>, <code>docs/metrics.md</code>.</p>"""


def render_html(results: table.Results, f: dict, fig: _Figures, workdir: str) -> str:
    """The report page; writes its figures as a side effect through `fig`."""
    rows, meta = results.rows, f["meta"]
    primary = meta["primary_weights"]
    budgets = ", ".join(_num(b, 2) for b in meta["budgets"])
    paradigms = ", ".join(PARADIGM_NAMES.get(p, p) for p in meta["paradigms"])
    band = "shaded bands: 95% bootstrap intervals"
    sections = [
        ("findings", "Findings", (
            f"<p>Who is ahead on each shared metric ({primary.upper()} weights), at every budget "
            "trained (best configuration of each paradigm at that budget, seed replicates "
            "averaged, with its 95% interval over the evaluated images and seeds) and at the "
            "extrapolation budgets (fitted prediction with its 95% bootstrap interval). Bold: "
            "ahead; a lead is clear only when the two leading intervals do not overlap.</p>"
            + _summary_html(f)
            + _findings_html(f))),
        ("claims", "The paper's findings", (
            "<p>Each published finding of Kilian et al. against this study: reproduced only where "
            "the intervals separate (FLOP counts are exact; timings are one measurement each).</p>"
            + _table(claims.HEADERS, claims.rows(f["claims"], lambda t: f"<b>{t}</b>", _esc),
                     left=2))),
        ("square", "The square: token type × order", (
            "<p>Beyond the paper: the four corners of {discrete, continuous} tokens × {raster, "
            "random} order on one backbone and one FLOP count, beside whole-image diffusion. The "
            "token-type contrast is also an FSQ-vs-KL autoencoder contrast: each verdict names "
            "both autoencoders' ceilings.</p>" + square.html(f))),
        ("prompt", "Prompt following", fig(
            figures.metric_vs_flops(rows, f, "prompt_following/overall"), "prompt_following",
            "Share of prompts whose generated image the judge reads back as satisfying the prompt, "
            "against training FLOPs (log scale). Markers: runs (colour = paradigm, shape = size; "
            "seed replicates averaged), error bars their 95% intervals; "
            f"lines: fitted e(C) with e = 1 − y, solid over the data, dashed beyond; {band}; "
            "dotted verticals: extrapolation budgets; dashed horizontals: instrument ceilings.")
            + fig(figures.categories_figure(rows, f), "prompt_following_categories",
                  f"Prompt following per category ({primary.upper()} weights) with fitted "
                  "curves.")),
        ("fd", "Image quality: FD on judge features", fig(
            figures.metric_vs_flops(rows, f, "fd_judge"), "fd_judge",
            "Fréchet distance between judge-network features of generated and held-out real "
            "images (lower is better; the judge replaces Inception, so values are not comparable "
            "with published Inception-based scores), against training FLOPs, log–log. "
            "Dashed horizontal: FD of autoencoder reconstructions, the floor for any generator; "
            f"{band}.")),
        ("alignment", "Alignment score", fig(
            figures.metric_vs_flops(rows, f, "alignment_score"), "alignment_score",
            "Contrastive image–text alignment, 100·max(cos, 0) (CLIP-score convention; higher is "
            f"better), fitted as e = 100 − y; {band}.")),
        ("fits", "Fitted compute laws", "<p class='note'>e(C) = E + A·C<sup>−α</sup> per paradigm "
         "and metric, in error units (column 'notes' names the transform and the estimator). "
         "Held-out: mean absolute relative error when the largest budget is left out of the fit "
         "and predicted.</p>"
         + _table(["metric", "paradigm", "runs", "E [95% CI]", "A", "α [95% CI]",
                   "held-out error", "notes"], _compute_fit_rows(f), left=2)),
        ("loss", "Loss, isoFLOP curves and compute-optimal allocation", fig(
            figures.loss_figure(rows, results.curves, f), "eval_loss",
            "Eval loss during training (thin lines, one per run) and at the end (markers), "
            "against training FLOPs; black: fitted e(C) "
            f"({_esc(f['meta']['estimators']['compute_law'].get('final/eval_loss', ''))}). Loss "
            "units differ between paradigms (velocity MSE vs nats per token), so compare within "
            "a panel only.")
            + fig(figures.isoflop_figure(f), "isoflop",
                  "isoFLOP curves: end-of-training loss against model size for each budget, with "
                  "a least-squares parabola in ln N; stars: minima (error bars: 95% bootstrap "
                  "interval when the budget has enough sizes to resample).")
            + fig(figures.frontier_figure(f), "frontier",
                  "Compute-optimal model size N* and training examples D* implied by the fitted "
                  f"L(N, D) ({_esc(f['meta']['estimators']['loss_law'])}) with C = k·N·D "
                  f"({band}), and the isoFLOP minima (stars).")
            + _loss_fit_html(f)),
        ("inference", "Inference cost", fig(
            figures.inference_figure(rows), "inference",
            "FLOPs per generated image (analytic, with guidance), measured throughput and "
            "latency per batch, against model size (median over runs).") + _inference_html(rows)),
        ("samples", "Samples at matched compute",
         "<p class='note'>Per budget and paradigm, the sample grid of the run with the lowest FD "
         "at that budget.</p>" + _samples_html(rows, workdir)),
        ("ablations", "Ablations", fig(
            figures.ema_figure(rows), "ema",
            "EMA against raw weights of the same main-grid runs, on the prompts the raw "
            "weights sampled (eval.raw_samples; positive: EMA better): "
            "percentage points of prompt following, FD reduction in % of the raw FD, and "
            "alignment-score points. Table: each ablation run against the main run of the same "
            "paradigm, size and budget.") + controls.ablation_html(rows)),
        ("replicates", "Seed replicates", controls.replicates_html(rows, primary)),
        ("rates", "Learning rates", controls.learning_rates_html(rows, workdir)),
        ("ceilings", "Instrument ceilings", "<p class='note'>The judge on real images and the "
         "autoencoder's reconstructions bound prompt following (and FD); what the instruments "
         "credit in destroyed images (blank, noise, blur, shuffled patches, blobs, decodes of "
         "random latents) is the floor garbage reaches.</p>" + _ceilings_html(rows)),
        ("runs", "Runs", _runs_html(results, f)),
        ("method", "Method", METHOD),
    ]
    toc = "".join(f"<li><a href='#{k}'>{_esc(t)}</a></li>" for k, t, _ in sections)
    body = "".join(f"<h2 id='{k}'>{_esc(t)}</h2>{c}" for k, t, c in sections)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>imgsynth scaling report</title><style>{CSS}</style></head><body>"
        "<h1>imgsynth scaling report</h1>"
        f"<p>{meta['n_runs']} finished main-grid runs of {_esc(paradigms)}; training compute "
        f"{_num(min(r['train_flops'] for r in fitting.main_runs(rows)), 2)} – "
        f"{_num(meta['max_observed_flops'], 2)} FLOPs; extrapolated to {budgets} FLOPs. "
        f"Bootstrap: {meta['n_bootstrap']} resamples over runs, seed {meta['seed']}.</p>"
        f"{_ceilings_sentence(rows)}{_dataset_html(rows)}<p class='note'>Workdir <code>{_esc(os.path.abspath(workdir))}</code>, generated "
        f"{stamp}.</p><ol>{toc}</ol>{body}</body></html>")


def build_report(workdir: str, budgets: Sequence[float] | None = None, n_bootstrap: int = 1000,
                 seed: int = 0, loss_delta: float = LOSS_HUBER_DELTA) -> str:
    """Tabulates, fits and renders a study; returns the path of WORKDIR/report/report.html.

    `budgets`: FLOP budgets to extrapolate to (default 10× and 100× the largest run);
    `loss_delta`: Huber delta of the fits of losses (L(N, D), eval loss against compute)."""
    results = table.collect(workdir)
    out_dir = os.path.join(workdir, "report")
    os.makedirs(out_dir, exist_ok=True)
    table.write_tables(results, out_dir)
    f = fitting.fit_study(results.rows, budgets=budgets, n_bootstrap=n_bootstrap, seed=seed,
                          loss_delta=loss_delta)
    fitting.write_fits(f, os.path.join(out_dir, "fits.json"))
    io.atomic_write(os.path.join(out_dir, "findings.md"), findings_markdown(f))
    page = render_html(results, f, _Figures(out_dir), workdir)
    path = os.path.join(out_dir, "report.html")
    io.atomic_write(path, page)
    return path


def _budgets(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budgets must be comma-separated FLOP counts, got {text!r}")
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise argparse.ArgumentTypeError(f"--budgets must be positive FLOP counts, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="study workdir holding runs/<name>/")
    parser.add_argument("--budgets", type=_budgets, default=None,
                        help="FLOP budgets to extrapolate to, e.g. 1e18,1e19 "
                             "(default: 10x and 100x the largest run)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--delta", type=float, default=LOSS_HUBER_DELTA,
                        help="Huber delta on log residuals for the fits of losses")
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        parser.error("--bootstrap must be >= 1")
    if not (args.delta > 0 and math.isfinite(args.delta)):
        parser.error("--delta must be a positive number")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        path = build_report(args.workdir, args.budgets, args.bootstrap, args.seed, args.delta)
    except (FileNotFoundError, table.NoResultsError, FitError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
