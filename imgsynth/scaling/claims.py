"""The paper's five published findings (DESIGN.md §1), each checked against a study, and the two
contrasts of the {discrete, continuous} × {raster, random order} square after them.

The findings table says who leads each metric at each budget; a reader comparing with Kilian et
al. wants one answer per claim. Each claim gets a verdict — reproduced, partly reproduced,
refuted, no clear lead, or not measured — and the evidence behind it, with intervals. The rule is
the report's: a lead counts only when the two intervals do not overlap (evaluation intervals,
across seeds where replicated); FLOP counts are exact, timings are single measurements.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from imgsynth.scaling.markup import ci as _ci, num as _num
from imgsynth.scaling.replicates import separated
from imgsynth.scaling.table import MATCHED

DIFFUSION, TOKENS, NEXT_TOKEN = "flow", ("maskgit", "ar"), "ar"
PAPER = (DIFFUSION, *TOKENS)          # the paper's findings compare these three only
# The square's contrasts: (a, b) pairs at fixed order (token type) and at fixed token type
# (order); `a` is the side the contrast's hypothesis says leads (docs/square.md).
TOKEN_TYPE = (("ar_continuous", "ar"), ("mar", "maskgit"))
ORDER = (("maskgit", "ar"), ("mar", "ar_continuous"))
CONTINUOUS = ("ar_continuous", "mar")
HEADERS = ("finding (paper)", "metric", "verdict", "evidence")
REPRODUCED, PARTLY, REFUTED, UNCLEAR, NOT_MEASURED = (
    "reproduced", "partly reproduced", "refuted", "no clear lead", "not measured")


# Per finding, the metrics that can decide it, the first a study measures: the judge's on the
# shapes data; on own data label following (prompt following) and Inception FID where its
# weights are given, else fd_align (image quality). Each: (metric, label, reconstruction ceiling).
PROMPT_METRICS = (("prompt_following/overall", "prompt following (judge)"),
                  ("label_following", "label following (the dataset's label classifier)"))
QUALITY_METRICS = (("fd_judge", "FD on judge features", "autoencoder_fd_judge"),
                   ("inception_fid", "Inception FID", None),
                   ("fd_align", "FD on alignment-model features", "autoencoder_fd_align"))
LACKS = {"prompt": "neither prompt following (the judge: shapes data) nor label following "
                   "(labels in the dataset) was evaluated",
         "quality": "no FD was evaluated (the judge's on shapes data, Inception FID with its "
                    "weights given, or fd_align)"}


def _first_observed(f: dict, metrics) -> tuple | None:
    """The first of `metrics` ((metric, label, ...) tuples) with observed findings rows."""
    return next((m for m in metrics if observed(f, m[0])), None)


def observed(f: dict, metric: str) -> list[dict]:
    """The findings rows trained (not extrapolated) for a headline metric, ascending budget."""
    return [x for x in f["findings"] if x["kind"] == "observed"
            and x["metric"].split("/", 1)[1] == metric]


def _cell(x: dict, p: str) -> str:
    ci = (x.get("ci95") or {}).get(p)
    return f"{p} {_num(x['values'][p])}" + (f" {_ci(ci)}" if ci else "")


def _duel(x: dict, a: Sequence[str], b: Sequence[str], higher: bool):
    """The best of paradigms `a` against the best of `b` in one findings row: ('a' | 'b' | None
    for ahead, clear or not, the two names); None when a side has no value."""
    pick = max if higher else min
    va = [p for p in a if p in x["values"] and math.isfinite(x["values"][p])]
    vb = [p for p in b if p in x["values"] and math.isfinite(x["values"][p])]
    if not va or not vb:
        return None
    pa, pb = (pick(v, key=lambda p: x["values"][p]) for v in (va, vb))
    clear = separated((x.get("ci95") or {}).get(pa), (x.get("ci95") or {}).get(pb))
    a_ahead = (x["values"][pa] > x["values"][pb]) == higher
    return ("a" if a_ahead else "b"), bool(clear), pa, pb


def _tally(verdicts: Sequence[str | None], a_wins: str, b_wins: str) -> str:
    if a_wins in verdicts and b_wins in verdicts:
        return UNCLEAR + " (mixed: clear leads both ways)"
    return a_wins if a_wins in verdicts else b_wins if b_wins in verdicts else UNCLEAR


PROMPT_CLAIM = ("1. token methods, led by next-token prediction, beat diffusion on prompt "
                "following")


def _prompt_claim(f: dict, metric: str, label: str) -> dict:
    claim = PROMPT_CLAIM
    pairs = [(x, _duel(x, TOKENS, [DIFFUSION], True)) for x in observed(f, metric)]
    rows, duels = [x for x, d in pairs if d], [d for _, d in pairs if d]
    if not rows:
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED,
                    evidence="no budget has both a token paradigm and diffusion evaluated")
    clear = [("tokens" if d[0] == "a" else "diffusion") if d[1] else None for d in duels]
    verdict = _tally(clear, "tokens", "diffusion")
    verdict = {"tokens": REPRODUCED, "diffusion": REFUTED}.get(verdict, verdict)
    led = sum((_duel(x, [NEXT_TOKEN], ["maskgit"], True) or ("b", False))[:2] == ("a", True)
              for x in rows)
    last = rows[-1]
    evidence = (f"clear lead at {clear.count('tokens')}/{len(rows)} budgets for a token method, "
                f"{clear.count('diffusion')}/{len(rows)} for diffusion; next-token clearly "
                "ahead of "
                f"MaskGIT at {led}/{len(rows)}; at {_num(last['budget'], 2)} FLOPs: "
                + ", ".join(_cell(last, p) for p in sorted(last["values"])))
    return dict(finding=claim, metric=label, verdict=verdict, evidence=evidence)


def _quality_claim(f: dict) -> dict:
    claim = ("2. next-token prediction leads image quality at small budgets; diffusion improves "
             "faster and its fitted trend catches up")
    chosen = _first_observed(f, QUALITY_METRICS)
    if chosen is None:
        return dict(finding=claim, metric=QUALITY_METRICS[0][1], verdict=NOT_MEASURED,
                    evidence=LACKS["quality"])
    metric, label, _ = chosen
    rows = [x for x in observed(f, metric) if _duel(x, [NEXT_TOKEN], [DIFFUSION], False)]
    if not rows:
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED,
                    evidence="no budget has both next-token prediction and diffusion evaluated")
    first = _duel(rows[0], [NEXT_TOKEN], [DIFFUSION], False)
    later = [d for d in (_duel(x, [NEXT_TOKEN], [DIFFUSION], False) for x in rows[1:])
             if d[0] == "b" and d[1]]
    fitted = [c for c in f["crossovers"] if c["metric"] == rows[0]["metric"]
              and c["status"] == "crossover" and c["challenger"] == DIFFUSION
              and c["leader"] == NEXT_TOKEN]
    catch = ("diffusion clearly ahead at a larger trained budget" if later else
             f"fitted crossover at {_num(fitted[0]['flops'], 2)} {_ci(fitted[0]['ci95'], 2)} "
             "FLOPs" if fitted else "diffusion does not catch up in the data or the fits")
    if first[1] and first[0] == "a":
        verdict = REPRODUCED if later or fitted else PARTLY
    elif first[1]:
        verdict, catch = REFUTED, "diffusion already clearly ahead at the smallest budget"
    else:
        verdict = UNCLEAR
    return dict(finding=claim, metric=label, verdict=verdict, evidence=(
        f"at {_num(rows[0]['budget'], 2)} FLOPs: "
        f"{_cell(rows[0], NEXT_TOKEN)} vs {_cell(rows[0], DIFFUSION)}; at "
        f"{_num(rows[-1]['budget'], 2)}: {_cell(rows[-1], NEXT_TOKEN)} vs "
        f"{_cell(rows[-1], DIFFUSION)}; {catch}"))


def _by_size(runs, column: str) -> dict[str, dict[str, float]]:
    """Median of `column` per size and paradigm, for the sizes every paradigm trained."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        if math.isfinite(r.get(column, math.nan)):
            out.setdefault(r["size"], {}).setdefault(r["paradigm"], []).append(r[column])
    paradigms = {r["paradigm"] for r in runs}
    return {s: {p: float(np.median(v)) for p, v in ps.items()} for s, ps in out.items()
            if set(ps) == paradigms and len(ps) > 1}


def _cheapest_claim(runs, column: str, who: str, claim: str, label: str, note: str) -> dict:
    sizes = _by_size(runs, column)
    if not sizes:
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED,
                    evidence="no size with every paradigm's inference measured")
    lowest = {s: min(v, key=v.get) for s, v in sizes.items()}
    hits = sum(p == who for p in lowest.values())
    verdict = REPRODUCED if hits == len(sizes) else REFUTED if hits == 0 else PARTLY
    return dict(finding=claim, metric=label, verdict=verdict, evidence="; ".join(
        f"{s}: " + ", ".join(f"{p} {_num(v)}" for p, v in sorted(sizes[s].items(),
                                                               key=lambda kv: kv[1]))
        for s in sorted(sizes, key=lambda s: min(sizes[s].values()))) + f" ({note})")


def _ema_metrics(runs) -> list[tuple[str, str, bool]]:
    """Finding 4's metrics, (column after "raw/" or "ema_matched/", name, higher is better): of
    image quality and of prompt following, the first each that runs measured with both weight sets'
    intervals (the judge's on shapes data; fd_align and label following on own data)."""
    def both(metric):
        return any(all(math.isfinite(r.get(f"{w}/{metric}_lo", math.nan)) for w in ("raw", MATCHED))
                   for r in runs)
    return [(m[0], m[1], higher) for family, higher in ((QUALITY_METRICS, False),
                                                         (PROMPT_METRICS, True))
            for m in [next((m for m in family if both(m[0])), family[0])]]


def _ema_effects(runs, column: str, higher: bool) -> dict[str, list[int]]:
    """Per paradigm, per run with both weight sets' intervals: +1 where the EMA is clearly better
    than the raw weights on the same prompts (the 95% intervals separate), -1 clearly worse, 0 no
    clear difference."""
    out: dict[str, list[int]] = {}
    for r in runs:
        raw, ema = ([r.get(f"{w}/{column}{x}", math.nan) for x in ("_lo", "_hi")]
                    for w in ("raw", MATCHED))
        clear = separated(raw, ema)
        if clear is not None:
            better = ema[0] > raw[1] if higher else ema[1] < raw[0]
            out.setdefault(r["paradigm"], []).append((1 if better else -1) if clear else 0)
    return out


def _ema_verdict(effects: dict[str, list[int]]) -> str:
    """Reproduced where the EMA clearly helps diffusion in most of its runs and no token method
    in most of its; refuted the other way round; otherwise (both, neither) no clear lead."""
    share = {p: v.count(1) / len(v) for p, v in effects.items()}
    diffusion, tokens = share[DIFFUSION], max(share[p] for p in TOKENS if p in share)
    return (REPRODUCED if diffusion >= 0.5 > tokens else
            REFUTED if tokens >= 0.5 > diffusion else UNCLEAR)


def _ema_claim(runs, primary: str) -> dict:
    claim = "4. weight averaging (EMA) helps diffusion far more than the token methods"
    metrics = _ema_metrics(runs)
    label = "EMA vs raw weights: " + ", ".join(name for _, name, _ in metrics)
    verdicts, parts = [], []
    for column, name, higher in metrics:
        effects = _ema_effects(runs, column, higher)
        if DIFFUSION not in effects or not set(TOKENS) & set(effects):
            continue
        verdicts.append(_ema_verdict(effects))
        parts.append(f"{name}: EMA clearly better / clearly worse in " + ", ".join(
            f"{p} {v.count(1)}/{v.count(-1)} of {len(v)} runs"
            for p, v in sorted(effects.items())) + f" ({verdicts[-1]})")
    if not verdicts:
        losses = {}
        for r in runs:
            raw, ema = r.get("final/eval_loss", math.nan), r.get("final/eval_loss_ema", math.nan)
            if math.isfinite(raw) and math.isfinite(ema) and raw > 0:
                losses.setdefault(r["paradigm"], []).append(100 * (raw - ema) / raw)
        context = "; ".join(f"{p} {_num(float(np.median(v)), 2)} %"
                            for p, v in sorted(losses.items()))
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED, evidence=(
            f"raw weights were not evaluated ({primary} only); the cpu_study grid measures "
            "it" + (f". Median eval-loss reduction by EMA at the end of training: {context} "
                    "(negative: EMA's loss is higher; no interval)" if context else "")))
    if all(v == REPRODUCED for v in verdicts):
        verdict = REPRODUCED
    elif REPRODUCED in verdicts and REFUTED in verdicts:
        verdict = UNCLEAR + " (mixed: the metrics disagree)"
    else:
        verdict = (PARTLY if REPRODUCED in verdicts else
                   REFUTED if REFUTED in verdicts else UNCLEAR)
    return dict(finding=claim, metric=label, verdict=verdict, evidence="; ".join(parts))


def _autoencoder_claim(runs, primary: str) -> dict:
    claim = "5. autoencoder quality bounds image quality, mostly for diffusion"
    metric, name, ceiling = next(
        (m for m in QUALITY_METRICS if m[2] and any(
            math.isfinite(r.get(f"{primary}/{m[0]}", math.nan)) for r in runs)),
        QUALITY_METRICS[0])
    label = f"best {name} vs FD of the autoencoder's reconstructions"
    col = f"{primary}/{metric}"
    binds, parts = {}, []
    for p in sorted({r["paradigm"] for r in runs}):
        rs = [r for r in runs if r["paradigm"] == p and math.isfinite(r.get(col, math.nan))]
        floor = [r[f"ceilings/{ceiling}"] for r in rs
                 if math.isfinite(r.get(f"ceilings/{ceiling}", math.nan))]
        if not rs or not floor:
            continue
        best, floor = min(rs, key=lambda r: r[col]), float(np.median(floor))
        lo = best.get(f"{col}_lo", math.nan)
        binds[p] = bool(math.isfinite(lo) and lo <= floor)
        parts.append(f"{p} {_num(best[col])} [{_num(lo)}, {_num(best.get(f'{col}_hi'))}] vs "
                     f"{_num(floor)} ({_num(best[col] / floor, 2)}×)")
    if DIFFUSION not in binds or not set(TOKENS) & set(binds):
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED,
                    evidence="autoencoder ceilings missing for diffusion or the token methods")
    tokens = any(binds.get(p) for p in TOKENS)
    verdict = (REPRODUCED if binds[DIFFUSION] and not tokens else
               REFUTED if tokens and not binds[DIFFUSION] else UNCLEAR)
    note = ("" if any(binds.values()) else
            "; no paradigm's best run reaches its autoencoder's floor at this compute")
    return dict(finding=claim, metric=label, verdict=verdict, evidence="; ".join(parts) + note)


def _ceilings(runs, column: str) -> str:
    """The two autoencoders' reconstruction ceilings (median over runs): the token-type contrast
    is also a KL-vs-FSQ contrast, so its reader needs both."""
    parts = []
    for name, side in (("KL", CONTINUOUS), ("discrete", TOKENS)):
        v = [r[f"ceilings/{column}"] for r in runs if r["paradigm"] in side
             and math.isfinite(r.get(f"ceilings/{column}", math.nan))]
        parts.append(f"{name} {_num(float(np.median(v)))}" if v else f"{name} not measured")
    return f"autoencoder ceilings ({column.replace('autoencoder_', '')} of reconstructions): " + \
        ", ".join(parts)


def _square_claim(runs, f: dict, claim: str, metric: str, label: str, higher: bool, pairs,
                  a_name: str, b_name: str, ceiling: str) -> dict:
    """One contrast of the square: at every budget, each (a, b) pair's duel; a verdict from the
    clear leads as for the paper's findings."""
    duels = [(x, a, b, _duel(x, [a], [b], higher)) for x in observed(f, metric)
             for a, b in pairs]
    duels = [(x, a, b, d) for x, a, b, d in duels if d]
    if not duels:
        return dict(finding=claim, metric=label, verdict=NOT_MEASURED, evidence=(
            "no budget has both paradigms of a pair evaluated; " + _ceilings(runs, ceiling)))
    clear = [(a_name if d[0] == "a" else b_name) if d[1] else None for _, _, _, d in duels]
    verdict = _tally(clear, a_name, b_name)
    verdict = {a_name: REPRODUCED, b_name: REFUTED}.get(verdict, verdict)
    per_pair = []
    for a, b in pairs:
        mine = [(x, d) for x, pa, _, d in duels if pa == a]
        if mine:
            x = mine[-1][0]
            per_pair.append(f"{a} vs {b}: {a} clearly ahead at "
                            f"{sum(d[0] == 'a' and d[1] for _, d in mine)}/{len(mine)} budgets, "
                            f"{b} at {sum(d[0] == 'b' and d[1] for _, d in mine)}; at "
                            f"{_num(x['budget'], 2)} FLOPs {_cell(x, a)} vs {_cell(x, b)}")
    return dict(finding=claim, metric=label, verdict=verdict,
                evidence="; ".join(per_pair + [_ceilings(runs, ceiling)]))


def square(runs: Sequence[dict], f: dict) -> list[dict]:
    """The square's two contrasts (beyond the paper): token type at fixed order, order at fixed
    token type."""
    return [
        _square_claim(runs, f, "square: token type — continuous tokens beat discrete ones on "
                      "image quality at fixed order", "fd_judge", "FD on judge features", False,
                      TOKEN_TYPE, "continuous", "discrete", "autoencoder_fd_judge"),
        _square_claim(runs, f, "square: order — random order beats raster order on prompt "
                      "following at fixed token type", "prompt_following/overall",
                      "prompt following (judge)", True, ORDER, "random", "raster",
                      "autoencoder_prompt_following"),
    ]


def check(runs: Sequence[dict], f: dict) -> list[dict]:
    """One entry per published claim (finding, metric, verdict, evidence) from the finished
    main-grid runs and the study's fits (`fits.fit_study` without this key), then the square's
    two contrasts. The paper's claims read the paper's three paradigms only."""
    primary = f["meta"]["primary_weights"]
    paper = [r for r in runs if r["paradigm"] in PAPER]
    return _paper(paper, f, primary) + square(runs, f)


def _paper(runs: Sequence[dict], f: dict, primary: str) -> list[dict]:
    prompt = _first_observed(f, PROMPT_METRICS)
    return [
        _prompt_claim(f, *prompt) if prompt else dict(
            finding=PROMPT_CLAIM, metric=PROMPT_METRICS[0][1], verdict=NOT_MEASURED,
            evidence=LACKS["prompt"]),
        _prompt_claim(f, "alignment_score", "alignment score (the CLIP-score analogue)"),
        _quality_claim(f),
        _cheapest_claim(runs, "inference/flops_per_image", NEXT_TOKEN,
                        "3a. next-token prediction (KV cache) is by far the cheapest at inference "
                        "in FLOPs", "FLOPs per image", "exact counts, with guidance"),
        _cheapest_claim(runs, "inference/latency_s", DIFFUSION,
                        "3b. diffusion has the lowest latency", "seconds per batch",
                        "one timing per run on this machine, median over runs"),
        _ema_claim(runs, primary),
        _autoencoder_claim(runs, primary),
    ]


def rows(claims: Sequence[dict], bold, esc=str) -> list[list[str]]:
    """Table rows (HEADERS) for the report's page or its Markdown; `bold` marks the verdict."""
    return [[esc(c["finding"]), esc(c["metric"]), bold(esc(c["verdict"])), esc(c["evidence"])]
            for c in claims]
