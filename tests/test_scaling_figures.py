"""Every report figure reads at a glance: its legends, as matplotlib lays them out, lie inside
the figure (nothing clipped) and cover no data point, and a point at a metric's bound (prompt
following 0) shows whole inside its axes. Findings name a paradigm ahead only when its lead is
clear, so a tie at 0 is never a lead."""
import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fixtures.scaling_workdir import make_workdir
from imgsynth.scaling import fits as fitting
from imgsynth.scaling import replicates, report, table


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The report's figures for a fabricated study whose smallest-budget runs score 0 on prompt
    following, drawn by Agg as the PNGs are."""
    workdir = make_workdir(str(tmp_path_factory.mktemp("study")))
    results = table.collect(workdir)
    smallest = min(r["train_flops"] for r in fitting.main_runs(results.rows))
    for r in results.rows:
        if r["train_flops"] == smallest:
            for w in ("raw", "ema"):
                for suffix in ("", "_lo", "_hi"):
                    r[f"{w}/prompt_following/overall{suffix}"] = 0.0
    f = fitting.fit_study(results.rows, budgets=[1e17, 1e18], n_bootstrap=20)
    figs = {}

    def keep(fig, name, caption):
        if fig is not None:
            FigureCanvasAgg(fig).draw()
            figs[name] = fig
        return ""
    report.render_html(results, f, keep, workdir)
    return figs, f


def _marker_points(fig):
    """(axes, display x, display y, marker radius in pixels) of every drawn data marker."""
    out = []
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " ") or not line.get_visible():
                continue
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
            xy = xy[np.isfinite(xy).all(axis=1)]
            radius = line.get_markersize() / 2 * fig.dpi / 72
            for x, y in ax.transData.transform(xy) if len(xy) else []:
                out.append((ax, x, y, radius))
    return out


def test_legends_inside_the_figure_and_off_the_data(drawn):
    figs, _ = drawn
    assert {"prompt_following", "fd_judge", "alignment_score", "isoflop"} <= set(figs)
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        width, height = fig.bbox.width, fig.bbox.height
        points = _marker_points(fig)
        assert points, name
        for legend in legends:
            box = legend.get_window_extent(renderer)
            assert box.x0 >= -1 and box.y0 >= -1, (name, box)
            assert box.x1 <= width + 1 and box.y1 <= height + 1, (name, box, width, height)
            covered = [(x, y) for _, x, y, _ in points if box.contains(x, y)]
            assert not covered, (name, covered[:3])


def test_points_at_zero_show_whole(drawn):
    figs, _ = drawn
    fig = figs["prompt_following"]
    zeros = 0
    for ax, x, y, radius in _marker_points(fig):
        lo, _ = ax.get_ylim()
        if math.isclose(ax.transData.inverted().transform((x, y))[1], 0.0, abs_tol=1e-9):
            zeros += 1
            assert lo < 0
            assert y - radius >= ax.bbox.y0 - 0.5, (y, radius, ax.bbox.y0)
    assert zeros >= 3   # every paradigm's smallest-budget run


def test_a_tie_is_never_a_lead(drawn):
    _, f = drawn
    tie = {"label": "prompt following", "budget": 3e11, "kind": "observed", "winner": "ar",
           "values": {p: 0.0 for p in f["meta"]["paradigms"]},
           "ci95": {p: [0.0, 0.0] for p in f["meta"]["paradigms"]},
           "clear": replicates.separated([0.0, 0.0], [0.0, 0.0])}
    assert tie["clear"] is False
    md = report.findings_markdown({**f, "findings": [tie]})
    row = next(line for line in md.splitlines() if line.startswith("| prompt following | 3e11"))
    assert "no clear lead" in row and "**" not in row
    clear_rows = [x for x in f["findings"] if x["clear"]]
    md = report.findings_markdown(f)
    assert md.count("no clear lead") >= len(f["findings"]) - len(clear_rows)
