"""Small HTML pieces of the report: numbers as a reader wants them, escaped text, tables."""
from __future__ import annotations

import html
import math
from collections.abc import Sequence


def num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def num0(E: float) -> str:
    """E of a fit, shown as 0 when it sits at its bound (a pure power law); fitted metrics are
    all far above 1e-9."""
    return "0" if abs(E) < 1e-9 else num(E)


def warn(text) -> str:
    return f"<span class='warn'>{esc(text)}</span>"


def ci(interval, digits: int = 3) -> str:
    return f"[{num(interval[0], digits)}, {num(interval[1], digits)}]" if interval else "[–]"


def esc(text) -> str:
    return html.escape(str(text))


def table(headers: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> str:
    """HTML table; cells are pre-escaped HTML; the first `left` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>'
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
