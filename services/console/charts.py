"""Server-rendered SVG charts: no JavaScript, no charting library, no CDN.

Pure functions from numbers to an SVG string (autoescaped labels); tests check their shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 640, 220, 36
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
                       f'font-size="11" text-anchor="middle">{shown}</text>')
        out.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - PAD + 14}" font-size="11" '
                   f'text-anchor="middle">{escape(label[:12])}</text>')
    return _frame(title, "".join(out))


def stacked(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> str:
    """Stacked bars (e.g. customers per tier per day), coloured by tier when names are tiers."""
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
        if n <= 16 or i % max(1, n // 8) == 0:
            out.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - PAD + 14}" font-size="10" '
                       f'text-anchor="middle">{escape(label[-5:])}</text>')
    legend = "".join(
        f'<rect x="{PAD + 90 * k}" y="6" width="10" height="10" '
        f'fill="{TIER_COLOURS.get(name, SERIES_COLOURS[k % len(SERIES_COLOURS)])}"/>'
        f'<text x="{PAD + 90 * k + 14}" y="15" font-size="11">{escape(name)}</text>'
        for k, name in enumerate(series))
    return _frame(title, legend + "".join(out))


def score_line(title: str, points: Sequence[tuple[int, float, str]]) -> str:
    """Score over time: (epoch ms, score 0..1, tier) points, tier bands behind the line."""
    bands = "".join(
        f'<rect x="{PAD}" y="{PAD + (HEIGHT - 2 * PAD) * (1 - hi):.1f}" '
        f'width="{WIDTH - PAD - 8}" height="{(HEIGHT - 2 * PAD) * (hi - lo):.1f}" '
        f'fill="{TIER_COLOURS[t]}" opacity="0.08"/>'
        for t, lo, hi in (("low", 0.0, 0.45), ("medium", 0.45, 0.75), ("high", 0.75, 1.0)))
    if not points:
        return _frame(title, bands)
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1)

    def xy(ts: int, score: float) -> tuple[float, float]:
        x = PAD + (WIDTH - PAD - 8) * ((ts - t0) / span if len(points) > 1 else 0.5)
        return x, PAD + (HEIGHT - 2 * PAD) * (1 - score)

    coords = [xy(ts, s) for ts, s, _ in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{TIER_COLOURS.get(t, "#1f5fbf")}">'
                   f'<title>{s:.2f} ({escape(t)})</title></circle>'
                   for (x, y), (_, s, t) in zip(coords, points, strict=True))
    axis = "".join(f'<text x="{PAD - 6}" y="{PAD + (HEIGHT - 2 * PAD) * (1 - v) + 4:.1f}" '
                   f'font-size="10" text-anchor="end">{v:.1f}</text>' for v in (0.0, 0.5, 1.0))
    line = f'<polyline points="{path}" fill="none" stroke="#1d2430" stroke-width="2"/>'
    return _frame(title, bands + axis + line + dots)
