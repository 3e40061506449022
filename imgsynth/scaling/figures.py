"""The report's figures, drawn with matplotlib's object API (Agg, no pyplot state).

Every function takes the results table and/or fits.json (the fit command: its table and fit)
and returns a `Figure`, or None when there is nothing to show for it. Colours name paradigms
and markers name model sizes throughout, so a reader learns the legend once. Runs' markers average
seed replicates and carry their 95% intervals as error bars (`replicates.aggregate`).
"""
from __future__ import annotations

import math
from io import BytesIO
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullLocator

from imgsynth import io
from imgsynth.scaling import replicates
from imgsynth.scaling.fits import PRIMARY_WEIGHTS, main_runs
from imgsynth.scaling.table import MATCHED, PROMPT_CATEGORIES

PARADIGM_STYLE = {"flow": ("#1f77b4", "flow matching"), "maskgit": ("#2ca02c", "MaskGIT"),
                  "ar": ("#d62728", "autoregressive"),
                  "ar_continuous": ("#ff7f0e", "autoregressive, continuous"),
                  "mar": ("#9467bd", "MAR (continuous)")}
MARKERS = "os^DvPX*h"
METRIC_AXES = {
    "prompt_following": "prompt following (fraction of prompts satisfied)",
    "fd_judge": "FD on judge features (lower is better)",
    "alignment_score": "alignment score, 100·max(cos, 0)",
    "final/eval_loss": "eval loss at end of training",
}
FLOPS_LABEL = "training compute (FLOPs)"


def save_png(fig: Figure, path: str) -> bytes:
    """Writes `fig` as a PNG under a temporary name, renames it to `path`; returns the bytes."""
    buf = BytesIO()
    fig.savefig(buf, format="png")
    io.atomic_write(path, buf.getvalue())
    return buf.getvalue()


def paradigm_color(p: str) -> str:
    return PARADIGM_STYLE.get(p, ("#555555", p))[0]


def paradigm_label(p: str) -> str:
    return PARADIGM_STYLE.get(p, ("", p))[1]


def size_markers(rows: Sequence[dict]) -> dict[str, str]:
    """Marker per size name, ordered by model size."""
    sizes: dict[str, list[float]] = {}
    for r in rows:
        if r["size"] and np.isfinite(r["params_non_embedding"]):
            sizes.setdefault(r["size"], []).append(r["params_non_embedding"])
    order = sorted(sizes, key=lambda s: np.median(sizes[s]))
    return {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(order)}


def _figure(ncols: int, nrows: int = 1, width: float = 5.0, height: float = 3.8) -> tuple:
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def _log_flops_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_minor_locator(NullLocator())  # decades suffice; minor ticks cost seconds
    ax.set_xlabel(FLOPS_LABEL)


def _log_params_axis(ax) -> None:
    """Model sizes span about a decade: label 1, 2 and 5 × 10^k rather than every minor tick."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("non-embedding parameters N")


def _fit_ylim(ax, values, log: bool, bounds=(None, None)) -> None:
    """Y range from the data and fitted lines, not the (possibly wide) bands nor the instrument
    ceilings (a ceiling near 1 would squash scores near 0 into a line). A metric's bound (0 for
    a fraction) is passed by a small margin, so points sitting on it show whole."""
    v = np.asarray([x for x in values if np.isfinite(x) and (x > 0 or not log)], float)
    if not v.size:
        return
    lo, hi = (np.log(v.min()), np.log(v.max())) if log else (v.min(), v.max())
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    lo, hi = lo - pad, hi + pad
    if log:
        lo, hi = math.exp(lo), math.exp(hi)
    margin = 0.04 * (hi - lo)
    if bounds[0] is not None:
        lo = max(lo, bounds[0] - margin)
    if bounds[1] is not None:
        hi = min(hi, bounds[1] + margin)
    ax.set_ylim(lo, hi)


def _figure_legend(fig, handles) -> None:
    """The figure's one legend, outside the axes on the right in one column, so it covers no
    point; the figure widens by the legend's estimated width (its longest label), so the axes
    keep their size and constrained layout never has to squeeze them or clip the legend."""
    chars = max((len(h.get_label()) for h in handles), default=0)
    fig.set_figwidth(fig.get_figwidth() + 0.7 + 0.062 * chars)
    fig.legend(handles=handles, loc="outside right upper", ncols=1, frameon=False,
               fontsize="small")


def _axes_handles(fig) -> list:
    """Labelled lines drawn on the axes (ceilings, per-budget markers), each label once."""
    seen: dict[str, object] = {}
    for ax in fig.axes:
        for h in ax.get_lines():
            label = h.get_label()
            if not label.startswith("_") and label not in seen:
                seen[label] = h
    return list(seen.values())


def _legend(fig, rows, paradigms, extrapolated: bool = True) -> None:
    """One legend for the whole figure: paradigms by colour, sizes by marker, then whatever the
    axes labelled (instrument ceilings)."""
    handles = [Line2D([], [], color=paradigm_color(p), lw=2, label=paradigm_label(p))
               for p in paradigms]
    handles += [Line2D([], [], color="#444444", marker=m, ls="", label=f"size {s}")
                for s, m in size_markers(rows).items()]
    if extrapolated:
        handles += [Line2D([], [], color="#444444", ls="--", label="extrapolated fit")]
    _figure_legend(fig, handles + _axes_handles(fig))


def _plot_fit(ax, entry: dict | None, color: str, max_data: float) -> list[float]:
    """Fitted curve (solid over the data, dashed beyond) and its bootstrap band; returns the
    curve's values for axis limits."""
    if not entry or "curve" not in entry:
        return []
    c = entry["curve"]
    x = np.array(c["flops"])
    y = np.array(c["value"], float)
    i = int(np.searchsorted(x, max_data, side="right"))
    ax.plot(x[:i], y[:i], color=color, lw=1.8)
    ax.plot(x[max(i - 1, 0):], y[max(i - 1, 0):], color=color, lw=1.5, ls="--")
    if c.get("lo") is not None:
        ax.fill_between(x, np.array(c["lo"], float), np.array(c["hi"], float), color=color,
                        alpha=0.13, lw=0)
    return y.tolist()


def _scatter(ax, points: dict[tuple[str, str], list[tuple]], markers) -> None:
    """One artist per (paradigm, size): colour names the paradigm, the marker the size; points
    (x, y, lo, hi) get a vertical error bar from lo to hi where both are known."""
    for (p, size), xy in points.items():
        x, y = [v[0] for v in xy], [v[1] for v in xy]
        ax.plot(x, y, ls="", marker=markers.get(size, "o"), color=paradigm_color(p), ms=5.5,
                alpha=0.85, mec="white", mew=0.5, clip_on=False)
        bars = [v for v in xy if len(v) == 4 and np.isfinite(v[2]) and np.isfinite(v[3])]
        if bars:
            bx, by, lo, hi = (np.array(c, float) for c in zip(*bars))
            ax.errorbar(bx, by, yerr=[np.maximum(by - lo, 0), np.maximum(hi - by, 0)], fmt="none",
                        ecolor=paradigm_color(p), elinewidth=0.9, capsize=2, alpha=0.7)


def _points(ax, runs, column, markers) -> list[float]:
    """Runs of `column` against training FLOPs, seed replicates averaged, with 95% intervals."""
    points: dict[tuple[str, str], list[tuple]] = {}
    for r in replicates.aggregate(runs):
        if np.isfinite(r[column]):
            points.setdefault((r["paradigm"], r["size"]), []).append(
                (r["train_flops"], r[column], r.get(f"{column}_lo", np.nan),
                 r.get(f"{column}_hi", np.nan)))
    _scatter(ax, points, markers)
    return [v[1] for xy in points.values() for v in xy]


def _budget_lines(ax, budgets) -> None:
    for b in budgets:
        ax.axvline(b, color="#888888", lw=0.8, ls=":")


def metric_vs_flops(rows, fits: dict, name: str) -> Figure | None:
    """One panel per weight set (raw, EMA) of metric `name` against training FLOPs."""
    runs = main_runs(rows)
    panels = [w for w in ("raw", "ema") if any(np.isfinite(r[f"{w}/{name}"]) for r in runs)]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    markers = size_markers(runs)
    max_data = max(r["train_flops"] for r in runs)
    paradigms = fits["meta"]["paradigms"]
    key = name.split("/")[0]
    for ax, w in zip(axes[0], panels):
        column = f"{w}/{name}"
        values = []
        for p in paradigms:
            values += _plot_fit(ax, fits["compute_fits"].get(p, {}).get(column), paradigm_color(p),
                                max_data)
        values += _points(ax, runs, column, markers)
        _budget_lines(ax, fits["meta"]["budgets"])
        _log_flops_axis(ax)
        if key == "fd_judge":
            ax.set_yscale("log")
        _fit_ylim(ax, values, log=key == "fd_judge",
                  bounds=(0.0, 1.0) if key == "prompt_following" else (0.0, None))
        _ceilings(ax, runs, key)
        ax.set_ylabel(METRIC_AXES.get(key, name))
        ax.set_title(f"{'EMA' if w == 'ema' else 'raw'} weights")
    _legend(fig, runs, paradigms)
    return fig


def _ceilings(ax, runs, key: str) -> None:
    """Instrument bounds as horizontal lines: what a perfect generator would score. The judge's
    ceiling is one per dataset; an autoencoder's belongs to the paradigms that use it (KL for
    flow, LFQ for the token paradigms), so it is drawn per paradigm in its colour. Drawn after
    the y range is set from the data: a ceiling beyond it is named in the legend, not drawn."""
    judge = ("ceilings/judge_prompt_following", "judge on real images", ":", False)
    lines = {"prompt_following": [judge, ("ceilings/autoencoder_prompt_following",
                                          "autoencoder recon.", "--", True)],
             "fd_judge": [("ceilings/autoencoder_fd_judge", "autoencoder recon.", "--", True)]}
    lo, hi = ax.get_ylim()
    for column, label, ls, per_paradigm in lines.get(key, []):
        groups = ([(p, f"{label}, {paradigm_label(p)}", paradigm_color(p))
                   for p in sorted({r["paradigm"] for r in runs})] if per_paradigm
                  else [(None, label, "#333333")])
        for p, line_label, color in groups:
            values = [r[column] for r in runs
                      if (p is None or r["paradigm"] == p) and np.isfinite(r.get(column, np.nan))]
            if values:
                v = float(np.median(values))
                where = "" if lo <= v <= hi else (" (off scale, above)" if v > hi
                                                  else " (off scale, below)")
                ax.axhline(v, color=color, lw=1.0, ls=ls,
                           label=f"ceiling, {line_label}: {v:.3g}{where}")


def categories_figure(rows, fits: dict) -> Figure | None:
    """Prompt following per GenEval category (primary weights) against training FLOPs."""
    runs = main_runs(rows)
    cats = [c for c in PROMPT_CATEGORIES[1:]
            if any(np.isfinite(r[f"{PRIMARY_WEIGHTS}/prompt_following/{c}"]) for r in runs)]
    if not cats:
        return None
    ncols = 3
    fig, axes = _figure(ncols, math.ceil(len(cats) / ncols), width=4.2, height=3.2)
    markers = size_markers(runs)
    max_data = max(r["train_flops"] for r in runs)
    for ax, c in zip(axes.flat, cats):
        column = f"{PRIMARY_WEIGHTS}/prompt_following/{c}"
        for p in fits["meta"]["paradigms"]:
            _plot_fit(ax, fits["compute_fits"].get(p, {}).get(column), paradigm_color(p), max_data)
        _points(ax, runs, column, markers)
        _budget_lines(ax, fits["meta"]["budgets"])
        _log_flops_axis(ax)
        ax.set_ylim(-0.04, 1.04)   # points at 0 and 1 show whole
        ax.set_title(c.replace("_", " "))
        ax.set_ylabel("fraction satisfied")
    for ax in list(axes.flat)[len(cats):]:
        ax.set_visible(False)
    _legend(fig, runs, fits["meta"]["paradigms"])
    return fig


def loss_figure(rows, curves, fits: dict) -> Figure | None:
    """Per paradigm: eval loss during training (one line per run) and the fitted e(C)."""
    runs = main_runs(rows)
    paradigms = [p for p in fits["meta"]["paradigms"]
                 if any(np.isfinite(r["final/eval_loss"]) for r in runs if r["paradigm"] == p)]
    if not paradigms:
        return None
    fig, axes = _figure(len(paradigms), width=4.6)
    markers = size_markers(runs)
    sizes = list(markers)
    cmap = {s: f"C{i}" for i, s in enumerate(sizes)}
    names = {r["run"] for r in runs}
    max_data = max(r["train_flops"] for r in runs)
    for ax, p in zip(axes[0], paradigms):
        for name in sorted(names):
            pts = [c for c in curves if c["run"] == name and c["paradigm"] == p
                   and np.isfinite(c["eval/loss"])]
            if pts:
                ax.plot([c["train_flops"] for c in pts], [c["eval/loss"] for c in pts],
                        color=cmap.get(pts[0]["size"], "gray"), lw=0.8, alpha=0.6)
        for size in sizes:
            pts = [(r["train_flops"], r["final/eval_loss"]) for r in runs if r["paradigm"] == p
                   and r["size"] == size and np.isfinite(r["final/eval_loss"])]
            if pts:
                ax.plot(*zip(*pts), ls="", color=cmap[size], marker=markers[size], ms=5.5,
                        mec="white", mew=0.5)
        _plot_fit(ax, fits["compute_fits"].get(p, {}).get("final/eval_loss"), "black", max_data)
        _log_flops_axis(ax)
        ax.set_yscale("log")
        ax.set_title(paradigm_label(p))
        ax.set_ylabel("eval loss (paradigm's own units)")
    handles = [Line2D([], [], color=cmap[s], marker=markers[s], label=f"size {s}") for s in sizes]
    handles.append(Line2D([], [], color="black", label="fit e(C) = E + A·C^-α"))
    _figure_legend(fig, handles)
    return fig


def isoflop_figure(fits: dict) -> Figure | None:
    """Per paradigm: end-of-training loss against model size, one parabola per budget."""
    paradigms = [p for p, e in fits["isoflop"].items() if e.get("budgets")]
    if not paradigms:
        return None
    fig, axes = _figure(len(paradigms), width=4.6)
    all_b = sorted({b["budget"] for p in paradigms for b in fits["isoflop"][p]["budgets"]})
    cmap = colormaps["viridis"]
    color = {b: cmap(i / max(len(all_b) - 1, 1) * 0.9) for i, b in enumerate(all_b)}
    for ax, p in zip(axes[0], paradigms):
        for item in fits["isoflop"][p]["budgets"]:
            c = color[item["budget"]]
            ax.plot(item["n"], item["loss"], "o", color=c, ms=5,
                    label=f"budget {item['budget']:.1e} FLOPs")
            if "parabola" in item:
                n = np.geomspace(min(item["n"]) / 1.5, max(item["n"]) * 1.5, 60)
                u = np.log(n)
                c2, c1, c0 = item["parabola"]
                ax.plot(n, c2 * u * u + c1 * u + c0, color=c, lw=1.2)
                xerr = None
                if item.get("n_opt_ci95"):
                    lo, hi = item["n_opt_ci95"]
                    xerr = [[max(item["n_opt"] - lo, 0)], [max(hi - item["n_opt"], 0)]]
                ax.errorbar(item["n_opt"], item["loss_opt"], xerr=xerr, marker="*", ms=11,
                            color=c, mec="black", mew=0.6, capsize=3)
        _log_params_axis(ax)
        ax.set_ylabel(f"{fits['isoflop'][p].get('loss', 'loss')}")
        ax.set_title(paradigm_label(p))
    _figure_legend(fig, sorted(_axes_handles(fig), key=lambda h: float(h.get_label().split()[1])))
    return fig


def frontier_figure(fits: dict) -> Figure | None:
    """Compute-optimal model size and training examples against compute, per paradigm."""
    paradigms = [p for p in fits["meta"]["paradigms"]
                 if "curve" in fits["loss_fits"].get(p, {}).get("compute_optimal", {})]
    if not paradigms:
        return None
    fig, axes = _figure(2)
    for p in paradigms:
        color = paradigm_color(p)
        opt = fits["loss_fits"][p]["compute_optimal"]
        k = fits["loss_fits"][p]["k_flops_per_param_example"]
        x = np.array(opt["curve"]["flops"])
        n = np.array(opt["curve"]["n_opt"])
        label = f"{paradigm_label(p)}: N* ∝ C^{opt['a']:.2f}, D* ∝ C^{opt['b']:.2f}"
        axes[0, 0].plot(x, n, color=color, label=label)
        axes[0, 1].plot(x, x / (k * n), color=color)
        if opt["curve"].get("lo") is not None:
            axes[0, 0].fill_between(x, opt["curve"]["lo"], opt["curve"]["hi"], color=color,
                                    alpha=0.13, lw=0)
        minima = [b for b in fits["isoflop"].get(p, {}).get("budgets", []) if "n_opt" in b]
        if minima:
            c = np.array([b["budget"] for b in minima])
            nm = np.array([b["n_opt"] for b in minima])
            axes[0, 0].plot(c, nm, "*", color=color, ms=10, mec="black", mew=0.5)
            axes[0, 1].plot(c, c / (k * nm), "*", color=color, ms=10, mec="black", mew=0.5)
    for ax, ylabel in zip(axes[0], ("compute-optimal non-embedding parameters N*",
                                    "compute-optimal training examples D*")):
        _log_flops_axis(ax)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        _budget_lines(ax, fits["meta"]["budgets"])
    _figure_legend(fig, _axes_handles(fig))
    axes[0, 0].set_title("lines: from L(N, D); stars: isoFLOP minima")
    axes[0, 1].set_title("D* = C / (k·N*)")
    return fig


def inference_figure(rows) -> Figure | None:
    """Inference cost per paradigm against model size (median over that size's runs)."""
    runs = main_runs(rows)
    keys = [("inference/flops_per_image", "FLOPs per image"),
            ("inference/images_per_s", "throughput (images/s)"),
            ("inference/latency_s", "latency per batch (s)")]
    if not any(np.isfinite(r[k]) for r in runs for k, _ in keys):
        return None
    fig, axes = _figure(3, width=4.3)
    paradigms = sorted({r["paradigm"] for r in runs})
    for ax, (key, label) in zip(axes[0], keys):
        for p in paradigms:
            by_size: dict[float, list[float]] = {}
            for r in runs:
                if (r["paradigm"] == p and np.isfinite(r[key])
                        and np.isfinite(r["params_non_embedding"])):
                    by_size.setdefault(r["params_non_embedding"], []).append(r[key])
            if by_size:
                n = sorted(by_size)
                ax.plot(n, [np.median(by_size[x]) for x in n], "o-", color=paradigm_color(p),
                        label=paradigm_label(p))
        _log_params_axis(ax)
        ax.set_yscale("log")
        ax.set_ylabel(label)
    _figure_legend(fig, _axes_handles(fig))
    return fig


def ema_figure(rows) -> Figure | None:
    """EMA minus raw weights per paradigm against training FLOPs, on the prompts the raw weights
    saw (`ema_matched`), signed so that positive means EMA is better: percentage points for prompt
    following, points for the alignment score, relative change for FD (whose scale spans
    decades)."""
    runs = main_runs(rows)
    metrics = [("prompt_following/overall", "prompt following: EMA − raw (points of %)",
                lambda raw, ema: 100 * (ema - raw)),
               ("fd_judge", "FD: reduction by EMA (% of raw)",
                lambda raw, ema: 100 * (raw - ema) / raw),
               ("alignment_score", "alignment score: EMA − raw", lambda raw, ema: ema - raw)]
    have = [m for m in metrics
            if any(np.isfinite(r[f"{MATCHED}/{m[0]}"]) and np.isfinite(r[f"raw/{m[0]}"])
                   for r in runs)]
    if not have:
        return None
    fig, axes = _figure(len(have), width=4.3)
    markers = size_markers(runs)
    for ax, (m, label, gain) in zip(axes[0], have):
        points: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for r in replicates.aggregate(runs):
            raw, ema = r[f"raw/{m}"], r[f"{MATCHED}/{m}"]
            if np.isfinite(raw) and np.isfinite(ema) and raw != 0:
                points.setdefault((r["paradigm"], r["size"]), []).append(
                    (r["train_flops"], gain(raw, ema)))
        _scatter(ax, points, markers)
        ax.axhline(0, color="black", lw=0.8)
        _log_flops_axis(ax)
        ax.set_ylabel(label)
    _legend(fig, main_runs(rows), sorted({r["paradigm"] for r in runs}), extrapolated=False)
    return fig


def loss_law_figure(N, D, L, law, estimator: str) -> Figure:
    """A table's L(N, D) fit: loss against D coloured by N, with the fitted law at five model
    sizes spanning the data; and fitted against observed loss."""
    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    fig, axes = _figure(2, width=5.2)
    ax, ax2 = axes[0]
    cmap = colormaps["viridis"]
    lo, hi = np.log(N.min()), np.log(N.max())
    shade = (np.log(N) - lo) / max(hi - lo, 1e-12) * 0.9
    ax.scatter(D, L, c=[cmap(v) for v in shade], s=14, edgecolors="none")
    d = np.geomspace(D.min() / 1.3, D.max() * 1.3, 80)
    for q in np.quantile(N, [0.0, 0.25, 0.5, 0.75, 1.0]):
        ax.plot(d, law(q, d), color=cmap((np.log(q) - lo) / max(hi - lo, 1e-12) * 0.9), lw=1.2,
                label=f"fitted L(N, D) at N = {q:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples or tokens D")
    ax.set_ylabel("loss")
    fitted = law(N, D)
    ax2.scatter(fitted, L, c=[cmap(v) for v in shade], s=14, edgecolors="none")
    span = [min(fitted.min(), L.min()), max(fitted.max(), L.max())]
    ax2.plot(span, span, color="black", lw=0.8)
    ax2.set_xlabel("fitted loss")
    ax2.set_ylabel("observed loss (colour: model size)")
    _figure_legend(fig, _axes_handles(fig))
    fig.suptitle(f"L(N, D) = {law.E:.4g} + {law.A:.4g}/N^{law.alpha:.4f} + "
                 f"{law.B:.4g}/D^{law.beta:.4f}\n{estimator}", fontsize="small")
    return fig

