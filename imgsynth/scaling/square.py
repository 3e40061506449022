"""The report's drawing of the {discrete, continuous} × {raster, random order} square: one table
per headline metric, the four corners' best runs at the largest budget they share, with
whole-image diffusion beside them, and the two contrasts' verdicts (`claims.square`)."""
from __future__ import annotations

from imgsynth.scaling import claims
from imgsynth.scaling.markup import ci, esc, num, table

# (token type, raster corner, random-order corner)
CORNERS = (("discrete (FSQ)", "ar", "maskgit"), ("continuous (KL)", "ar_continuous", "mar"))
METRICS = (("fd_judge", "FD on judge features (lower is better)"),
           ("prompt_following/overall", "prompt following (higher is better)"))


def _cell(row: dict | None, p: str) -> str:
    if row is None or p not in row["values"]:
        return f"{esc(p)}: –"
    interval = (row.get("ci95") or {}).get(p)
    return f"{esc(p)}: <b>{num(row['values'][p])}</b> {ci(interval) if interval else ''}"


def html(f: dict) -> str:
    """The square's section, or a note that no run of the continuous-token paradigms finished."""
    square = {p for _, a, b in CORNERS for p in (a, b)}
    parts = []
    for metric, label in METRICS:
        rows = [x for x in claims.observed(f, metric)
                if set(claims.CONTINUOUS) & set(x["values"])]
        if not rows:
            continue
        top = max(rows, key=lambda x: (len(square & set(x["values"])), x["budget"]))
        body = [[esc(kind), _cell(top, raster), _cell(top, random)]
                for kind, raster, random in CORNERS]
        body.append(["whole image at once (KL)", _cell(top, claims.DIFFUSION), ""])
        parts.append(f"<p>{esc(label)} at {num(top['budget'], 2)} FLOPs (best run of each "
                     "paradigm there, 95% interval):</p>"
                     + table(["token type", "raster order", "random order"], body))
    if not parts:
        return ("<p class='note'>No finished run of the continuous-token paradigms "
                "(ar_continuous, mar): the square is not measured here (experiments/grids/"
                "square.py measures it).</p>")
    contrasts = [c for c in f["claims"] if c["finding"].startswith("square:")]
    return "".join(parts) + table(claims.HEADERS, claims.rows(contrasts, lambda t: f"<b>{t}</b>",
                                                              esc), left=2)
