"""Server-rendered SVG charts: no JavaScript, no charting library, no CDN.

Pure functions from numbers to an SVG string (autoescaped labels); tests check their shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from services.common.riskchange import TIER_RANK
from services.common.timefmt import iso_ms_at

# Drawn for a phone: a chart is 360 units wide and shown ~310 px wide at 375 px, so its
# 13-unit labels are ~11 px there; console.css caps charts at 34rem on larger screens.
WIDTH, HEIGHT, PAD = 360, 210, 30
TIER_COLOURS = {"high": "#b42318", "medium": "#b54708", "low": "#067647"}
SERIES_COLOURS = ("#1f5fbf", "#b42318", "#067647", "#b54708", "#6941c6", "#475467")


def _frame(title: str, body: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{escape(title)}" class="chart">'
            f'<title>{escape(title)}</title>'
            f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 8}" y2="{HEIGHT - PAD}" '
            f'stroke="#98a2b3"/>{body}</svg>')


def bars(title: str, labels: Sequence[str], values: Sequence[float | None], *,
         percent: bool = False) -> str:
    """One bar per label; ``None`` values leave a gap (no data)."""
    n = max(len(labels), 1)
    top = max([v for v in values if v is not None] or [0.0]) or 1.0
    slot = (WIDTH - PAD - 8) / n
    out = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = PAD + i * slot
        if value is not None:
            h = (HEIGHT - 2 * PAD) * value / top
            y = HEIGHT - PAD - h
            shown = f"{value:.0%}" if percent else f"{value:g}"
            out.append(f'<rect x="{x + slot * 0.15:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                       f'height="{h:.1f}" fill="#1f5fbf"><title>{escape(label)}: {shown}'
                       f'</title></rect><text x="{x + slot / 2:.1f}" y="{y - 4:.1f}" '
                       f'font-size="13" text-anchor="middle">{shown}</text>')
        out.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - PAD + 16}" font-size="13" '
                   f'text-anchor="middle">{escape(label[:12])}</text>')
    return _frame(title, "".join(out))


def nice_top(value: float) -> float:
    """The end of a scale people read: the smallest 1, 2, 2.5 or 5 × 10^k at or above
    ``value`` (0.33 -> 0.5, 0.07 -> 0.1); 1 when there is nothing to draw."""
    if value <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(value))
    for k in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= k * step * (1 + 1e-9):
            return k * step
    return 10.0 * step


def tick_text(value: float, percent: bool = False) -> str:
    """A value as a label: "33%" ("2.5%" for a scale's tick), else the number."""
    return f"{round(value * 100, 4):g}%" if percent else f"{value:g}"


def hbars(title: str, labels: Sequence[str], values: Sequence[float | None], *,
          percent: bool = False, missing: str = "", top: float | None = None) -> str:
    """One horizontal bar per label, the label whole above it and the value at its end (room
    for "Exclusive service offered" or a staff member's name, even on a phone); ``None``
    values have no bar (no data), only ``missing`` saying why.

    ``top`` is the scale's end: charts given the same ``top`` (one per store) are drawn to
    one scale, comparable side by side, and say it on an axis (0, half, ``top``) under the
    bars. Without it a chart is drawn to its own largest value, without an axis."""
    row, left, room = 40, 8, WIDTH - 8 - 56
    end = top if top is not None else max([v for v in values if v is not None] or [0.0]) or 1.0
    out = []
    bottom = 8 + max(len(labels), 1) * row
    if top is not None:  # the axis: gridlines behind the bars, their values under them
        for i, tick in enumerate((0.0, top / 2, top)):
            x = left + room * tick / top
            anchor = "start" if i == 0 else "middle"
            out.append(f'<line x1="{x:.1f}" y1="8" x2="{x:.1f}" y2="{bottom}" '
                       f'stroke="#d0d5dd" stroke-dasharray="{"none" if i == 0 else "3 3"}"/>'
                       f'<text x="{x:.1f}" y="{bottom + 16}" font-size="13" fill="#5b6675" '
                       f'text-anchor="{anchor}" class="tick">{tick_text(tick, percent)}</text>')
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 8 + i * row
        out.append(f'<text x="{left}" y="{y + 13}" font-size="13" class="label">'
                   f'{escape(label)}</text>')
        if value is not None:
            w = max(room * min(value, end) / end, 1.0)
            shown = f"{value:.0%}" if percent else f"{value:g}"
            out.append(f'<rect x="{left}" y="{y + 18}" width="{w:.1f}" height="14" '
                       f'fill="#1f5fbf"><title>{escape(label)}: {shown}</title></rect>'
                       f'<text x="{left + w + 6:.1f}" y="{y + 30}" font-size="13" '
                       f'class="value">{shown}</text>')
        elif missing:
            out.append(f'<text x="{left}" y="{y + 30}" font-size="13" fill="#5b6675" '
                       f'class="missing">{escape(missing)}</text>')
    height = bottom + (24 if top is not None else 0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
            f'role="img" aria-label="{escape(title)}" class="chart">'
            f'<title>{escape(title)}</title>{"".join(out)}</svg>')


def stacked(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], *,
            names: dict[str, str] | None = None) -> str:
    """Stacked bars (e.g. customers per tier per day), coloured by tier when names are tiers;
    the legend says ``names[series]`` (e.g. the tier in the reader's language)."""
    n = max(len(labels), 1)
    totals = [sum(s[i] for s in series.values()) for i in range(len(labels))]
    top = max(totals or [0.0]) or 1.0
    slot = (WIDTH - PAD - 8) / n
    out = []
    for i, label in enumerate(labels):
        x, base = PAD + i * slot, float(HEIGHT - PAD)
        for k, (name, values) in enumerate(series.items()):
            h = (HEIGHT - 2 * PAD) * values[i] / top
            base -= h
            colour = TIER_COLOURS.get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)])
            out.append(f'<rect x="{x + slot * 0.1:.1f}" y="{base:.1f}" width="{slot * 0.8:.1f}" '
                       f'height="{h:.1f}" fill="{colour}"><title>{escape(label)} '
                       f'{escape(name)}: {values[i]:g}</title></rect>')
        if n <= 5 or i % max(1, (n + 4) // 5) == 0:  # at most ~5 dates: each legible
            out.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - PAD + 16}" font-size="13" '
                       f'text-anchor="middle">{escape(label[-5:])}</text>')
    legend = "".join(
        f'<rect x="{PAD + 90 * k}" y="6" width="12" height="12" '
        f'fill="{TIER_COLOURS.get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)])}"/>'
        f'<text x="{PAD + 90 * k + 16}" y="17" font-size="13">'
        f'{escape((names or {}).get(name, name))}</text>'
        for k, name in enumerate(series))
    return _frame(title, legend + "".join(out))


# the score chart is drawn for a phone: 360 units wide, shown ~310 px wide at 375 px (its
# 13-unit labels ~11 px), at most 34rem wide on a larger screen (console.css)
LINE_W, LINE_H, LINE_L, LINE_T, LINE_B = 360, 210, 30, 26, 36


def _band(score: float, medium: float, high: float) -> str:
    return "high" if score >= high else "medium" if score >= medium else "low"


def score_line(title: str, points: Sequence[tuple[int, float, str, str]], *,
               thresholds: tuple[float, float] = (0.45, 0.75),
               notes: dict[str, str] | None = None, tz_minutes: int = 0) -> str:
    """Score over time: (epoch ms, score 0..1, tier, note) points over the tier bands of
    ``thresholds`` (medium, high: where a score alone enters them), dates on the time axis
    (on the wall clock ``tz_minutes`` east of UTC: the customer's).

    Each point is coloured by its tier. A point whose tier is above its score's band (a
    business rule raised it: note ``"rule"``; hysteresis or the minimum dwell held it:
    ``"held"``) is a ring, explained in the legend by ``notes[note]``: the chart never seems
    to contradict the tier the page shows."""
    medium, high = thresholds
    plot_w, plot_h = LINE_W - LINE_L - 10, LINE_H - LINE_T - LINE_B
    bottom = LINE_T + plot_h

    def y_of(score: float) -> float:
        return LINE_T + plot_h * (1 - score)

    bands = "".join(
        f'<rect x="{LINE_L}" y="{y_of(hi):.1f}" width="{plot_w}" '
        f'height="{y_of(lo) - y_of(hi):.1f}" fill="{TIER_COLOURS[t]}" opacity="0.08"/>'
        for t, lo, hi in (("low", 0.0, medium), ("medium", medium, high), ("high", high, 1.0)))
    axis = "".join(f'<text x="{LINE_L - 4}" y="{y_of(v) + 4:.1f}" font-size="13" '
                   f'text-anchor="end">{v:g}</text>' for v in (0.0, 0.5, 1.0))
    base = (f'<line x1="{LINE_L}" y1="{bottom}" x2="{LINE_L + plot_w}" y2="{bottom}" '
            f'stroke="#98a2b3"/>')
    frame = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {LINE_W} {LINE_H}" '
             f'role="img" aria-label="{escape(title)}" class="chart line">'
             f'<title>{escape(title)}</title>{bands}{axis}{base}')
    if not points:
        return frame + "</svg>"
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1)

    def x_of(ts: int) -> float:
        return LINE_L + plot_w * ((ts - t0) / span if len(points) > 1 else 0.5)

    path = " ".join(f"{x_of(ts):.1f},{y_of(sc):.1f}" for ts, sc, _, _ in points)
    marks, used = [], []
    for ts, sc, tier, note in points:
        colour = TIER_COLOURS.get(tier, "#1f5fbf")
        raised = bool(note) and TIER_RANK.get(tier, 0) > TIER_RANK[_band(sc, medium, high)]
        said = (notes or {}).get(note, note) if raised else ""
        if raised and note not in used:
            used.append(note)
        tip = f"{_day(ts, tz_minutes)} · {sc:.2f} ({escape(tier)}{', ' + escape(said) if said else ''})"
        shape = (f'r="6" fill="#fff" stroke="{colour}" stroke-width="3"' if raised
                 else f'r="4.5" fill="{colour}"')
        marks.append(f'<circle cx="{x_of(ts):.1f}" cy="{y_of(sc):.1f}" {shape} '
                     f'class="{"raised" if raised else "point"}"><title>{tip}</title></circle>')
    first, last = _day(t0, tz_minutes), _day(t1, tz_minutes)
    dates = [(x_of(t0), first, "start" if len(points) > 1 else "middle")]
    if last != first:
        dates.append((x_of(t1), last, "end"))
    ticks = "".join(f'<text x="{x:.1f}" y="{bottom + 16}" font-size="13" '
                    f'text-anchor="{anchor}" class="date">{day}</text>'
                    for x, day, anchor in dates)
    legend = "" if not used else (
        f'<circle cx="{LINE_L + 6}" cy="12" r="5" fill="#fff" stroke="#475467" '
        f'stroke-width="2.5"/><text x="{LINE_L + 16}" y="16" font-size="13" class="legend">'
        f'{" · ".join(escape((notes or {}).get(n, n)) for n in used)}</text>')
    line = f'<polyline points="{path}" fill="none" stroke="#1d2430" stroke-width="2"/>'
    return frame + ticks + legend + line + "".join(marks) + "</svg>"


def _day(ms: int, tz_minutes: int = 0) -> str:
    """The date of epoch milliseconds on the wall clock ``tz_minutes`` east of UTC,
    YYYY-MM-DD (read alike in English and Chinese)."""
    return iso_ms_at(ms, tz_minutes)[:10]
